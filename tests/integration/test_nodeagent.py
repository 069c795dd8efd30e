"""The node agent as the kubelet of the real scheduler and Job controller: pods bound to its Node
run as local processes with their volumes, environment, own IP and termination messages."""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubetest import eventually
from nodeagenttest import node_agent

from labtune.devcluster.nodeagent import NodeAgent

TERMINATION_LOG = "/dev/termination-log"


@pytest.fixture(scope="module")
def agent(
    kubeconfig: Path, kube_controllers: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgent]:
    with node_agent(kubeconfig, tmp_path_factory.mktemp("node"), gpus=2) as running:
        yield running


def _job(name: str, script: str, *, node: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "unused",
        "command": ["sh", "-c", script],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **spec.pop("container", {}),
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [container],
                    **spec.pop("pod", {}),
                }
            },
            **spec,
        },
    }


def _pod(core: client.CoreV1Api, namespace: str, job: str) -> Any:
    def probe() -> Any:
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        return pods[0] if pods else None

    return eventually(probe, what=f"a pod of Job {job}")


def _job_condition(batch: client.BatchV1Api, namespace: str, name: str, timeout: float = 90) -> Any:
    def probe() -> Any:
        conditions = batch.read_namespaced_job(name, namespace).status.conditions or []
        return next((c for c in conditions if c.type in ("Complete", "Failed") and c.status == "True"), None)

    return eventually(probe, timeout=timeout, what=f"Job {name} to finish")


def test_node_is_ready_with_gpu_capacity(api_client: client.ApiClient, agent: NodeAgent) -> None:
    node = client.CoreV1Api(api_client).read_node(agent.name)
    assert node.status.capacity["nvidia.com/gpu"] == "2"
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease(agent.name, "kube-node-lease")
    assert lease.spec.holder_identity == agent.name


def test_job_runs_to_completion_with_volumes_env_and_termination_message(
    api_client: client.ApiClient, namespace: str, agent: NodeAgent
) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"config.yaml": "a: 1\n"}}
    )
    core.create_namespaced_secret(namespace, {"metadata": {"name": "key"}, "stringData": {"token": "s3cret"}})
    script = (
        'set -e; cat /etc/labtune/config.yaml; echo "$GREETING $POD $TOKEN"; '
        "touch /tmp/ok; ! touch /root-is-read-only 2>/dev/null; "
        "printf '{\"done\": true}' > /dev/termination-log"
    )
    container = {
        "env": [
            {"name": "WHO", "value": "world"},
            {"name": "GREETING", "value": "hello $(WHO) $$(WHO)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "key", "key": "token"}}},
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/labtune", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {"readOnlyRootFilesystem": True},
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    pod_spec = {
        "volumes": [{"name": "config", "configMap": {"name": "cfg"}}, {"name": "tmp", "emptyDir": {}}]
    }
    batch.create_namespaced_job(
        namespace, _job("ok", script, node=agent.name, container=container, pod=pod_spec)
    )

    assert _job_condition(batch, namespace, "ok").type == "Complete"
    pod = _pod(core, namespace, "ok")
    assert pod.spec.node_name == agent.name  # bound by kube-scheduler, GPU request included
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(agent.settings.pod_cidr)
    main = pod.status.container_statuses[0]
    assert main.state.terminated.exit_code == 0
    assert main.state.terminated.reason == "Completed"
    assert json.loads(main.state.terminated.message) == {"done": True}
    assert {c.type: c.status for c in pod.status.conditions}["PodScheduled"] == "True"
    log = next(
        agent.settings.data_root.glob(f"pods/{namespace}_{pod.metadata.name}_*/containers/main/container.log")
    )
    assert log.read_text().splitlines() == ["a: 1", f"hello world $(WHO) {pod.metadata.name} s3cret"]
    # kubectl logs: the API server proxies to the agent's log endpoint on the node's address
    assert core.read_namespaced_pod_log(pod.metadata.name, namespace) == log.read_text()
    assert (
        core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=1)
        == log.read_text().splitlines(True)[-1]
    )


def test_exit_code_fails_the_job_through_the_pod_failure_policy(
    api_client: client.ApiClient, namespace: str, agent: NodeAgent
) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [78]}}
        ]
    }
    job = _job(
        "bad", "echo 'error: bad config'; exit 78", node=agent.name, backoffLimit=3, podFailurePolicy=policy
    )
    batch.create_namespaced_job(namespace, job)

    failed = _job_condition(batch, namespace, "bad")
    assert (failed.type, failed.reason) == ("Failed", "PodFailurePolicy")
    terminated = _pod(core, namespace, "bad").status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (78, "Error")
    assert terminated.message == "error: bad config"  # FallbackToLogsOnError: the log's tail
    assert len(core.list_namespaced_pod(namespace, label_selector="job-name=bad").items) == 1  # no retry


def _create_pod(core: client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> None:
    """Creates a bare pod once the namespace's default ServiceAccount exists (admission needs it)."""

    def account() -> bool | None:
        names = [a.metadata.name for a in core.list_namespaced_service_account(namespace).items]
        return True if "default" in names else None

    eventually(account, what="the default ServiceAccount")
    core.create_namespaced_pod(namespace, pod)


def test_deleting_a_pod_stops_its_process_after_sigterm(
    api_client: client.ApiClient, namespace: str, agent: NodeAgent, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api_client)
    marker = tmp_path / "marker"
    script = (
        "trap 'echo stopped > /mnt/out/marker; exit 0' TERM; echo $$$$ > /mnt/out/pid; "
        "while true; do sleep 0.1; done"
    )
    pod = {
        "metadata": {"name": "sleeper"},
        "spec": {
            "nodeName": agent.name,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 20,
            "containers": [
                {
                    "name": "main",
                    "image": "unused",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "out", "mountPath": "/mnt/out"}],
                }
            ],
            "volumes": [{"name": "out", "hostPath": {"path": str(tmp_path)}}],
        },
    }
    _create_pod(core, namespace, pod)
    pid_file = tmp_path / "pid"
    pid = int(
        eventually(lambda: (pid_file.exists() and pid_file.read_text().strip()) or None, what="the process")
    )
    started = time.monotonic()
    core.delete_namespaced_pod("sleeper", namespace)

    def gone() -> bool | None:
        names = [p.metadata.name for p in core.list_namespaced_pod(namespace).items]
        return True if "sleeper" not in names else None

    eventually(gone, timeout=30, what="the pod object to go")
    assert time.monotonic() - started < 15  # the process ended on SIGTERM, not after the grace period
    assert marker.read_text().strip() == "stopped"
    assert not Path(f"/proc/{pid}").exists()


def test_two_pods_serve_the_same_port_on_their_own_ips(
    api_client: client.ApiClient, namespace: str, agent: NodeAgent
) -> None:
    core = client.CoreV1Api(api_client)
    server = (
        "import http.server as h, os\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "        self.wfile.write(os.environ['HOSTNAME'].encode())\n"
        "h.HTTPServer(('', 9090), H).serve_forever()"
    )
    for name in ("one", "two"):
        container = {"name": "main", "image": "unused", "command": ["python", "-c", server]}
        _create_pod(
            core,
            namespace,
            {"metadata": {"name": name}, "spec": {"nodeName": agent.name, "containers": [container]}},
        )

    def answers(name: str) -> str | None:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase != "Running" or not pod.status.pod_ip:
            return None
        try:
            with urllib.request.urlopen(f"http://{pod.status.pod_ip}:9090/", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return None

    assert eventually(lambda: answers("one"), what="pod one on :9090") == "one"
    assert eventually(lambda: answers("two"), what="pod two on :9090") == "two"
    ips = {core.read_namespaced_pod(name, namespace).status.pod_ip for name in ("one", "two")}
    assert len(ips) == 2
    ready = core.read_namespaced_pod("one", namespace).status.conditions
    assert {c.type: c.status for c in ready}["Ready"] == "True"
