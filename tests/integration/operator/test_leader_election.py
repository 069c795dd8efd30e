"""Two operator replicas with leader election on a real Lease: one leads and reconciles, the other
waits and serves /healthz; the leader SIGKILLed, the standby takes the Lease within the lease
duration and reconciles what came since."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubetest import Cluster, OperatorProcess, OperatorRunner, eventually, free_port, tuning_job

ROOT = Path(__file__).resolve().parents[3]
NAMESPACE = "labtune-system"
LEASE_DURATION_S = 15  # the defaults, as the chart runs them
RENEW_DEADLINE_S = 10
RETRY_PERIOD_S = 2


def _bind_lease_role(api_client: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    role = yaml.safe_load((ROOT / "deploy/rbac/leader-election-role.yaml").read_text())
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "labtune-operator-leader-election", "namespace": NAMESPACE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "labtune-operator", "namespace": NAMESPACE}],
    }
    for create, body in ((rbac.create_namespaced_role, role), (rbac.create_namespaced_role_binding, binding)):
        try:
            create(NAMESPACE, body)
        except ApiException as error:
            if error.status != 409:
                raise


def _leader_gauge(process: OperatorProcess) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = [line.split()[1] for line in text.splitlines() if line.startswith("labtune_operator_leader ")]
    return float(values[0]) if values else None


@pytest.fixture
def replicas(
    api_client: client.ApiClient,
    operator_kubeconfig: Path,
    labtune_crds: list[str],
    kube_controllers: None,
    gpu_node: str,
    tmp_path: Path,
) -> Iterator[tuple[str, dict[str, OperatorRunner]]]:
    _bind_lease_role(api_client)
    lease = f"labtune-test-{uuid.uuid4().hex[:6]}"
    runners = {}
    for name in ("a", "b"):
        args = (
            "--leader-election",
            f"--leader-election-namespace={NAMESPACE}",
            f"--leader-election-lease-name={lease}",
            f"--leader-election-identity=replica-{name}",
        )
        process = OperatorProcess(free_port(), free_port(), free_port(), tmp_path / f"operator-{name}.log")
        runners[name] = OperatorRunner(operator_kubeconfig, process, args)
    try:
        yield lease, runners
    finally:
        for runner in runners.values():
            runner.stop()
        coordination = client.CoordinationV1Api(api_client)
        coordination.delete_namespaced_lease(lease, NAMESPACE)


def test_the_standby_takes_over_when_the_leader_is_killed(
    api_client: client.ApiClient, cluster: Cluster, replicas: tuple[str, dict[str, OperatorRunner]]
) -> None:
    lease, runners = replicas
    coordination = client.CoordinationV1Api(api_client)
    runners["a"].start()
    eventually(lambda: True if _leader_gauge(runners["a"].process) == 1 else None, what="replica a to lead")
    runners["b"].start()  # its /healthz answers while it waits
    assert coordination.read_namespaced_lease(lease, NAMESPACE).spec.holder_identity == "replica-a"

    cluster.create(tuning_job("led-by-a", suspend=True))
    cluster.job("led-by-a-train")
    time.sleep(2 * RETRY_PERIOD_S)
    assert _leader_gauge(runners["b"].process) == 0  # still waiting: a renews its Lease

    runners["a"].kill()
    killed = time.monotonic()
    eventually(
        lambda: True if _leader_gauge(runners["b"].process) == 1 else None,
        timeout=LEASE_DURATION_S + 4 * RETRY_PERIOD_S,
        what="replica b to take the Lease",
    )
    failover = time.monotonic() - killed
    print(f"failover: {failover:.1f}s (lease duration {LEASE_DURATION_S}s)")
    assert coordination.read_namespaced_lease(lease, NAMESPACE).spec.holder_identity == "replica-b"
    assert failover <= LEASE_DURATION_S + 2 * RETRY_PERIOD_S

    cluster.create(tuning_job("led-by-b", suspend=True))
    cluster.job("led-by-b-train")
    status = cluster.status_when(
        "tuningjobs", "led-by-a", lambda s: s.get("state") == "Suspended", "suspended"
    )
    assert status["jobName"] == "led-by-a-train"
