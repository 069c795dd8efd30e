"""The local control plane is a real Kubernetes API with working controllers and scheduler."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from labtune_dev.binaries import (
    BINARIES,
    CONTROL_PLANE_COMMANDS,
    BinariesError,
    Versions,
    ensure_binaries,
    wrapper_go_mod,
)
from labtune_dev.controlplane import ControlPlane, ControlPlaneError

T = TypeVar("T")
BIN = Path(sys.executable).parent


def _eventually(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while (result := probe()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)
    return result


def _alive(pid: int) -> bool:
    """Live and not a zombie (a dead detached process may wait for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _processes_running(marker: str) -> list[str]:
    """Command lines of the live processes whose command line contains `marker`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace").replace("\0", " ")
        except OSError:
            continue  # exited meanwhile
        if marker in text and _alive(int(cmdline.parent.name)):
            found.append(text)
    return found


def test_server_is_the_built_kubernetes(
    api_client: client.ApiClient, control_plane: ControlPlane | None
) -> None:
    version = client.VersionApi(api_client).get_code()
    if control_plane is None:
        pytest.skip("USE_EXISTING_CLUSTER: the cluster's version is not ours to check")
    assert version.git_version == Versions.from_env().kube


def test_readyz(api_client: client.ApiClient) -> None:
    response = api_client.call_api("GET", f"{api_client.configuration.host}/readyz")
    assert (response.status, response.read()) == (200, b"ok")  # type: ignore[no-untyped-call]


def test_configmap_round_trip(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"answer": "42"})
    core.create_namespaced_config_map(namespace, body)
    assert core.read_namespaced_config_map("settings", namespace).data == {"answer": "42"}


@pytest.fixture
def fake_node(api_client: client.ApiClient) -> Iterator[str]:
    """A Ready Node without a kubelet: the scheduler binds to it, nothing runs the pods."""
    core = client.CoreV1Api(api_client)
    name = f"fake-node-{uuid.uuid4().hex[:8]}"
    capacity = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = client.V1NodeCondition(
        type="Ready", status="True", reason="KubeletReady", last_heartbeat_time=now, last_transition_time=now
    )
    core.create_node(
        client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}))
    )
    core.patch_node_status(
        name, {"status": {"capacity": capacity, "allocatable": capacity, "conditions": [ready.to_dict()]}}
    )
    yield name
    core.delete_node(name)


@pytest.mark.usefixtures("kube_controllers")
def test_job_pod_is_created_and_scheduled(
    api_client: client.ApiClient, namespace: str, fake_node: str
) -> None:
    container = client.V1Container(
        name="main",
        image="busybox",
        command=["true"],
        resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64Mi"}),
    )
    template = client.V1PodTemplateSpec(
        spec=client.V1PodSpec(
            containers=[container],
            restart_policy="Never",
            node_selector={"kubernetes.io/hostname": fake_node},
        )
    )
    job = client.V1Job(metadata=client.V1ObjectMeta(name="hello"), spec=client.V1JobSpec(template=template))
    client.BatchV1Api(api_client).create_namespaced_job(namespace, job)
    core = client.CoreV1Api(api_client)

    def scheduled_pod() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=hello").items
        return next((pod for pod in pods if pod.spec and pod.spec.node_name), None)

    pod = _eventually(scheduled_pod, what="the Job's pod to be bound to the fake node")
    assert pod.spec is not None
    assert pod.metadata is not None
    assert pod.spec.node_name == fake_node
    # No kubelet will confirm a graceful deletion: remove the pod now so the namespace can go.
    core.delete_namespaced_pod(str(pod.metadata.name), namespace, grace_period_seconds=0)


@pytest.mark.usefixtures("kube_controllers")
def test_garbage_collector_deletes_dependents(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    assert owner.metadata is not None
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=str(owner.metadata.uid)
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[reference])),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool | None:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return None

    _eventually(dependent_gone, what="the garbage collector to delete the dependent ConfigMap")


def test_stop_leaves_nothing_behind() -> None:
    plane = ControlPlane()
    plane.start()
    plane.start_controllers()
    pids, directory = plane.pids, plane.directory
    assert set(pids) == {*CONTROL_PLANE_COMMANDS, "etcd"}
    assert all(_alive(pid) for pid in pids.values())
    plane.stop()
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not _processes_running(str(directory))
    assert not directory.exists()


def test_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    """An apiserver that cannot start: the error shows its log; etcd and the temp folder go."""
    binaries = ensure_binaries()
    for name in BINARIES:
        (tmp_path / name).symlink_to(binaries / name)
    (tmp_path / "kube-apiserver").unlink()
    (tmp_path / "kube-apiserver").write_text("#!/bin/sh\necho 'apiserver: simulated failure' >&2\nexit 3\n")
    (tmp_path / "kube-apiserver").chmod(0o755)
    temp_dirs = set(Path(tempfile.gettempdir()).glob("labtune-controlplane-*"))
    with pytest.raises(ControlPlaneError, match=r"(?s)kube-apiserver exited with code 3.*simulated failure"):
        ControlPlane(tmp_path).start()
    assert not _processes_running(str(tmp_path))
    assert set(Path(tempfile.gettempdir()).glob("labtune-controlplane-*")) == temp_dirs


def _labtune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labtune_dev.dev_cli", "controlplane", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_up_env_down(tmp_path: Path) -> None:
    """The detached control plane: up (twice), kubectl through env's KUBECONFIG, down."""
    env = {**os.environ, "LABTUNE_CACHE": str(tmp_path), "KUBEBUILDER_ASSETS": str(ensure_binaries())}
    up = _labtune("up", "--no-controllers", env=env)
    assert up.returncode == 0, up.stderr
    export = up.stdout.splitlines()[-1]
    assert export.startswith("export KUBECONFIG=")
    kubeconfig = export.removeprefix("export KUBECONFIG=")
    state = json.loads((tmp_path / "run" / "controlplane" / "state.json").read_text())
    try:
        again = _labtune("up", env=env)
        assert (again.returncode, again.stdout.splitlines()[-1]) == (0, export)
        assert "already running" in again.stderr
        assert _labtune("env", env=env).stdout.strip() == export
        kubectl = shutil.which("kubectl", path=str(BIN)) or "kubectl"
        namespaces = subprocess.run(
            [kubectl, "get", "ns", "-o", "name"],
            env={**env, "KUBECONFIG": kubeconfig},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "namespace/default" in namespaces.stdout.split()
    finally:
        down = _labtune("down", env=env)
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in [state["pid"], *state["pids"].values()] if _alive(pid)]
    assert not _processes_running(str(tmp_path)) + _processes_running(state["directory"])
    assert not Path(state["directory"]).exists()
    assert not Path(kubeconfig).exists()
    after = _labtune("env", env=env)
    assert after.returncode != 0
    assert "no control plane is running" in after.stderr


def test_kubebuilder_assets_must_hold_every_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etcd").symlink_to(ensure_binaries() / "etcd")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(
        BinariesError, match="lacks executable kube-apiserver, kube-controller-manager, kube-scheduler"
    ):
        ensure_binaries()


def test_wrapper_go_mod_pins_the_staging_modules() -> None:
    published = (
        "module k8s.io/kubernetes\n\ngo 1.26.0\n\n"
        "require (\n\tk8s.io/api v0.0.0\n\tk8s.io/utils v0.0.0-2026\n)\n"
    )
    wrapper = wrapper_go_mod(published, Versions(kube="v1.36.3", etcd="v3.6.16"))
    assert "\ngo 1.26.0\n" in wrapper
    assert "require k8s.io/kubernetes v1.36.3" in wrapper
    assert "\tk8s.io/api => k8s.io/api v0.36.3" in wrapper
    assert "k8s.io/utils =>" not in wrapper
