"""The dev cluster's real node: kubelet, containerd (runc, overlayfs), CNI, kube-proxy and CoreDNS run
pods from images loaded into containerd, with the container semantics labtune's images rely on: logs,
exec, pod IPs reachable from the host, Services and DNS names, memory limits (OOMKilled), non-root
users with a read-only root, SIGTERM on deletion, and the advertised nvidia.com/gpu."""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubetest import eventually

from labtune_dev.binaries import ensure_debian_packages
from labtune_dev.node import GPU_RESOURCE, Node
from labtune_dev.oci import image_from_files

BUSYBOX_IMAGE = "labtune.local/busybox:test"
BUSYBOX = Path("/bin/busybox")


@pytest.fixture(scope="module")
def busybox(node: Node) -> str:
    """Debian's static busybox as a one-file image, loaded into the node."""
    ensure_debian_packages({"busybox-static": BUSYBOX}, "the node tests")
    files = {"bin/busybox": BUSYBOX.read_bytes()}
    node.load_image(image_from_files(BUSYBOX_IMAGE, files, ["/bin/busybox"], user="65532:65532"))
    return BUSYBOX_IMAGE


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def ns(core: client.CoreV1Api, node: Node) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def _pod(name: str, image: str, script: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/busybox", "sh", "-c", script],
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    **container,
                }
            ],
        },
    }


def _phase(core: client.CoreV1Api, ns: str, name: str, *phases: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, ns)
    return pod if pod.status.phase in phases else None


def _kubectl(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_node_is_ready_with_its_address_and_gpus(core: client.CoreV1Api, node: Node) -> None:
    found = core.read_node(node.name)
    assert {a.type: a.address for a in found.status.addresses}["InternalIP"] == node.settings.address
    assert found.status.capacity[GPU_RESOURCE] == str(node.settings.gpus)
    assert found.status.node_info.container_runtime_version.startswith("containerd://2.")
    assert not found.spec.taints


def test_pod_runs_as_non_root_with_logs_exec_and_its_ip(
    core: client.CoreV1Api, ns: str, busybox: str, kubeconfig: Path, node: Node
) -> None:
    script = (
        "id -u; touch /x 2>/dev/null || echo read-only root;"
        " mkdir -p /tmp/www; echo hello > /tmp/www/index.html; httpd -f -p 8080 -h /tmp/www"
    )
    pod = _pod("web", busybox, script)
    pod["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    core.create_namespaced_pod(ns, pod)
    running = eventually(lambda: _phase(core, ns, "web", "Running"), 60, "the pod to run")
    assert running.spec.node_name == node.name
    ip = running.status.pod_ip
    assert ip.startswith(node.settings.pod_cidr.rsplit(".", 2)[0])
    body = eventually(lambda: _get(f"http://{ip}:8080/"), 30, "the pod's HTTP server at its IP")
    assert body == "hello\n"

    def logged() -> str | None:
        text = _kubectl(kubeconfig, "-n", ns, "logs", "web")
        return text if "read-only" in text else None

    logs = eventually(logged, 30, "the pod's logs")
    assert logs.splitlines()[:2] == ["65532", "read-only root"]
    assert (
        _kubectl(kubeconfig, "-n", ns, "exec", "web", "--", "/bin/busybox", "cat", "/tmp/www/index.html")
        == "hello\n"
    )


def test_services_and_dns_names_resolve_and_route(core: client.CoreV1Api, ns: str, busybox: str) -> None:
    server = _pod(
        "server",
        busybox,
        "mkdir -p /tmp/www; echo served > /tmp/www/index.html; httpd -f -p 8080 -h /tmp/www",
    )
    server["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    server["spec"]["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    core.create_namespaced_pod(ns, server)
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    eventually(lambda: _phase(core, ns, "server", "Running"), 60, "the server pod")
    script = (
        "nslookup kubernetes.default.svc.cluster.local;"
        f" for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web.{ns}.svc.cluster.local/ && exit 0;"
        " sleep 1; done; exit 1"
    )
    core.create_namespaced_pod(ns, _pod("client", busybox, script))
    done = eventually(lambda: _phase(core, ns, "client", "Succeeded", "Failed"), 60, "the client pod")
    logs = core.read_namespaced_pod_log("client", ns)
    assert done.status.phase == "Succeeded", logs
    assert "10.0.0.1" in logs  # the `kubernetes` Service's ClusterIP, from CoreDNS
    assert logs.rstrip().endswith("served")  # through the Service's ClusterIP (kube-proxy)


def test_memory_limit_is_enforced_as_oomkilled(core: client.CoreV1Api, ns: str, busybox: str) -> None:
    limits = {"limits": {"memory": "32Mi", "cpu": "500m"}, "requests": {"memory": "32Mi", "cpu": "100m"}}
    pod = _pod("hog", busybox, "tail /dev/zero", resources=limits)
    core.create_namespaced_pod(ns, pod)
    done = eventually(
        lambda: _phase(core, ns, "hog", "Failed", "Succeeded"), 90, "the memory hog to be killed"
    )
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


def test_deleting_a_pod_sends_sigterm(core: client.CoreV1Api, ns: str, busybox: str, tmp_path: Path) -> None:
    claim = tmp_path / "out"
    claim.mkdir()
    claim.chmod(0o777)  # the pod's user writes there
    script = (
        "trap 'echo got TERM > /out/signal; exit 0' TERM;"
        " echo started > /out/signal; while true; do sleep 1; done"
    )
    pod = _pod("sleeper", busybox, script)
    pod["spec"]["volumes"] = [{"name": "out", "hostPath": {"path": str(claim)}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "out", "mountPath": "/out"}]
    core.create_namespaced_pod(ns, pod)
    eventually(lambda: _phase(core, ns, "sleeper", "Running"), 60, "the pod to run")
    eventually(lambda: (claim / "signal").is_file() or None, 30, "the pod to start its loop")
    core.delete_namespaced_pod("sleeper", ns)
    eventually(lambda: (claim / "signal").read_text() == "got TERM\n" or None, 30, "the pod's TERM trap")


def test_gpu_requests_schedule_up_to_the_advertised_count(
    core: client.CoreV1Api, ns: str, busybox: str, node: Node
) -> None:
    gpus = {"limits": {GPU_RESOURCE: str(node.settings.gpus)}}
    core.create_namespaced_pod(ns, _pod("fits", busybox, "echo ran on the CPU", resources=gpus))
    done = eventually(lambda: _phase(core, ns, "fits", "Succeeded", "Failed"), 60, "the GPU pod")
    assert done.status.phase == "Succeeded"
    assert core.read_namespaced_pod_log("fits", ns) == "ran on the CPU\n"
    too_many = {"limits": {GPU_RESOURCE: str(node.settings.gpus + 1)}}
    core.create_namespaced_pod(ns, _pod("too-many", busybox, "true", resources=too_many))

    def unschedulable() -> str | None:
        conditions = core.read_namespaced_pod("too-many", ns).status.conditions or []
        return next((c.message for c in conditions if c.reason == "Unschedulable"), None)

    assert "Insufficient nvidia.com/gpu" in eventually(unschedulable, 30, "the scheduler to refuse")


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return str(response.read().decode())
    except OSError:
        time.sleep(0.5)
        return None
