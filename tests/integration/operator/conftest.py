"""The operator as users run it: a `python -m labtune.operator` process against the real API server,
authenticated as a ServiceAccount bound to exactly deploy/rbac/clusterrole.yaml (not as admin).

There is no kubelet: a Ready GPU Node object lets the real scheduler bind job pods, and the tests
play the kubelet's part by patching pod status (running with an IP, succeeded with a termination
message, failed with an exit code) — the Job controller and the operator react as they would on a
real node.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubetest import GPU_PRODUCT, Cluster, Kubelet, OperatorProcess, OperatorRunner, free_port

ROOT = Path(__file__).resolve().parents[3]


def _apply_rbac(api_client: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    role = yaml.safe_load((ROOT / "deploy/rbac/clusterrole.yaml").read_text())
    try:
        rbac.create_cluster_role(role)
    except ApiException as error:
        if error.status != 409:
            raise
        rbac.replace_cluster_role(role["metadata"]["name"], role)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "labtune-operator-test"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "labtune-operator",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "labtune-operator", "namespace": "labtune-system"}],
    }
    try:
        rbac.create_cluster_role_binding(binding)
    except ApiException as error:
        if error.status != 409:
            raise


def _service_account_kubeconfig(api_client: client.ApiClient, admin_kubeconfig: Path, path: Path) -> Path:
    core = client.CoreV1Api(api_client)
    for create, body in (
        (core.create_namespace, {"metadata": {"name": "labtune-system"}}),
        (
            lambda b: core.create_namespaced_service_account("labtune-system", b),
            {"metadata": {"name": "labtune-operator"}},
        ),
    ):
        try:
            create(body)
        except ApiException as error:
            if error.status != 409:
                raise
    request = {"spec": {"audiences": [], "expirationSeconds": 86400}}
    token = core.create_namespaced_service_account_token(
        "labtune-operator", "labtune-system", request
    ).status.token
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        cluster = {
            "server": cluster["server"],
            "certificate-authority-data": base64.b64encode(
                Path(cluster["certificate-authority"]).read_bytes()
            ).decode(),
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "labtune-operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "labtune-operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def gpu_node(api_client: client.ApiClient) -> Iterator[str]:
    """A Ready Node with 8 GPUs, the GPU product label and the NoSchedule GPU taint."""
    core = client.CoreV1Api(api_client)
    name = f"gpu-node-{uuid.uuid4().hex[:6]}"
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.product": GPU_PRODUCT}
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    core.create_node({"metadata": {"name": name, "labels": labels}, "spec": {"taints": [taint]}})
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
    }
    core.patch_node_status(
        name, {"status": {"capacity": capacity, "allocatable": capacity, "conditions": [ready]}}
    )
    # The node lifecycle controller marks a node that stops heartbeating unreachable after 50 s and
    # taints it NoSchedule: later tests in the session then saw the trainer pod never scheduled.
    stopped = threading.Event()

    def heartbeat() -> None:
        while not stopped.wait(10.0):
            beat = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            with contextlib.suppress(ApiException):
                core.patch_node_status(
                    name, {"status": {"conditions": [ready | {"lastHeartbeatTime": beat}]}}
                )

    thread = threading.Thread(target=heartbeat, name="gpu-node-heartbeat", daemon=True)
    thread.start()
    yield name
    stopped.set()
    thread.join()
    core.delete_node(name)


@pytest.fixture(scope="module")
def operator_kubeconfig(
    api_client: client.ApiClient, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig with the operator's ServiceAccount token, bound to the operator's RBAC."""
    _apply_rbac(api_client)
    return _service_account_kubeconfig(api_client, kubeconfig, tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture(scope="module")
def operator_runner(
    operator_kubeconfig: Path,
    labtune_crds: list[str],
    kube_controllers: None,
    gpu_node: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorRunner]:
    """The operator watching every namespace with the ServiceAccount's token; one per test module,
    so that no operator outlives its tests and touches other tests' resources."""
    folder = tmp_path_factory.mktemp("operator")
    runner = OperatorRunner(
        operator_kubeconfig, OperatorProcess(free_port(), free_port(), free_port(), folder / "operator.log")
    )
    try:
        runner.start()
        yield runner
    finally:
        runner.stop()
        errors = [line for line in runner.process.log.read_text().splitlines() if "Traceback" in line]
        print(f"operator log: {runner.process.log} ({len(errors)} tracebacks)")


@pytest.fixture(scope="module")
def operator_process(operator_runner: OperatorRunner) -> OperatorProcess:
    """The running operator's ports and log."""
    return operator_runner.process


@pytest.fixture
def cluster(api_client: client.ApiClient, namespace: str) -> Cluster:
    return Cluster(api_client, namespace)


@pytest.fixture
def kubelet(api_client: client.ApiClient, namespace: str) -> Kubelet:
    return Kubelet(api_client, namespace)
