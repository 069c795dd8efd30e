"""Two operator replicas with leader election on a real Lease: one leads and reconciles, the other
waits and serves /healthz; the leader SIGKILLed, the standby takes the Lease about a lease duration
later and reconciles what came since, also in the middle of a burst of 200 TuningJobs (every child
made once, every status converged); the leader stopped by SIGTERM (a rolling update) gives the
Lease up and the standby takes it at its next try; a leader cut off from the API server (its
connections hang) exits before the standby may take the Lease."""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubetest import Cluster, OperatorProcess, OperatorRunner, eventually, free_port, tuning_job

from labtune.api import GROUP, VERSION

ROOT = Path(__file__).resolve().parents[3]
NAMESPACE = "labtune-system"
LEASE_DURATION_S = 12  # the defaults, as the chart runs them
RENEW_DEADLINE_S = 8
RETRY_PERIOD_S = 2
BURST = 200


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


def _leads(runner: OperatorRunner, timeout: float = 45.0) -> None:
    eventually(
        lambda: True if _leader_gauge(runner.process) == 1 else None,
        timeout=timeout,
        what="a replica to lead",
    )


def _start_both(runners: dict[str, OperatorRunner]) -> None:
    """Replica a first, until it leads; then replica b, whose /healthz answers while it waits."""
    runners["a"].start()
    _leads(runners["a"])
    runners["b"].start()


class FreezableProxy:
    """A TCP relay to the API server on the same address (its certificate names it) that a test can
    freeze: it keeps every connection open and passes no more bytes, as a partitioned network does."""

    def __init__(self, server: str) -> None:
        url = urllib.parse.urlsplit(server)
        assert url.hostname is not None
        self.upstream = (url.hostname, url.port or 443)
        self.listener = socket.create_server((url.hostname, 0))
        self.url = f"https://{url.hostname}:{self.listener.getsockname()[1]}"
        self.frozen = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.1)
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def _through(kubeconfig: Path, proxy: FreezableProxy, path: Path) -> Path:
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = proxy.url
    path.write_text(yaml.safe_dump(config))
    return path


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
    _start_both(runners)
    assert coordination.read_namespaced_lease(lease, NAMESPACE).spec.holder_identity == "replica-a"

    cluster.create(tuning_job("led-by-a", suspend=True))
    cluster.job("led-by-a-train")
    time.sleep(2 * RETRY_PERIOD_S)
    assert _leader_gauge(runners["b"].process) == 0  # still waiting: a renews its Lease

    runners["a"].kill()
    killed = time.monotonic()
    _leads(runners["b"], timeout=LEASE_DURATION_S + 4 * RETRY_PERIOD_S)
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


def _named_jobs(cluster: Cluster) -> dict[str, str]:
    """TuningJob name -> the Job its status names, for those whose status names one."""
    items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, cluster.namespace, "tuningjobs")
    return {
        item["metadata"]["name"]: item["status"]["jobName"]
        for item in items["items"]
        if (item.get("status") or {}).get("jobName")
    }


def _owners(items: list[Any]) -> Counter[str]:
    return Counter(ref.name for item in items for ref in item.metadata.owner_references or [])


def test_a_burst_of_runs_through_a_failover_makes_every_child_once(
    cluster: Cluster, replicas: tuple[str, dict[str, OperatorRunner]]
) -> None:
    _, runners = replicas
    _start_both(runners)
    names = [f"burst-{index:03d}" for index in range(BURST)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        created = pool.map(lambda name: cluster.create(tuning_job(name, suspend=True)), names)
        named_at_kill = eventually(
            lambda: len(named) if len(named := _named_jobs(cluster)) >= BURST // 4 else None,
            timeout=120,
            what=f"{BURST // 4} TuningJobs to name their Job",
        )
        runners["a"].kill()
        list(created)  # the creations go on through the failover; any error surfaces here
    print(f"replica a killed with {named_at_kill} of {BURST} TuningJobs reconciled")
    assert named_at_kill < BURST, "the burst ended before the kill: nothing was left for the standby"
    _leads(runners["b"], timeout=LEASE_DURATION_S + 4 * RETRY_PERIOD_S)

    named = eventually(
        lambda: found if len(found := _named_jobs(cluster)) == BURST else None,
        timeout=180,
        what=f"all {BURST} TuningJobs to name their Job",
    )
    assert named == {name: f"{name}-train" for name in names}
    for name in names:
        cluster.status_when("tuningjobs", name, lambda s: s.get("state") == "Suspended", "suspended")
    selector = "app.kubernetes.io/managed-by=labtune"
    jobs = cluster.batch.list_namespaced_job(cluster.namespace, label_selector=selector).items
    config_maps = cluster.core.list_namespaced_config_map(cluster.namespace, label_selector=selector).items
    for kind, children in (("Job", jobs), ("ConfigMap", config_maps)):
        owners = _owners(children)
        assert set(owners) == set(names), f"{kind}s owned by {len(owners)} of {BURST} TuningJobs"
        assert set(owners.values()) == {1}, f"{kind}s made twice: {[n for n, c in owners.items() if c > 1]}"


def test_a_leader_stopped_by_sigterm_hands_over_at_once(
    api_client: client.ApiClient, cluster: Cluster, replicas: tuple[str, dict[str, OperatorRunner]]
) -> None:
    lease, runners = replicas
    coordination = client.CoordinationV1Api(api_client)
    _start_both(runners)
    assert _leader_gauge(runners["b"].process) == 0

    stopping = time.monotonic()
    runners["a"].stop()
    assert runners["a"].popen is not None
    assert runners["a"].popen.returncode == 0  # a clean stop, not the exit of a lost Lease
    assert "gave the Lease up" in runners["a"].process.log.read_text()
    _leads(runners["b"], timeout=4 * RETRY_PERIOD_S)
    print(f"handover after SIGTERM: {time.monotonic() - stopping:.1f}s")
    assert coordination.read_namespaced_lease(lease, NAMESPACE).spec.holder_identity == "replica-b"
    cluster.create(tuning_job("after-handover", suspend=True))
    cluster.job("after-handover-train")


def test_a_partitioned_leader_stops_before_the_standby_leads(
    api_client: client.ApiClient,
    cluster: Cluster,
    operator_kubeconfig: Path,
    replicas: tuple[str, dict[str, OperatorRunner]],
    tmp_path: Path,
) -> None:
    _, runners = replicas
    server = yaml.safe_load(operator_kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    proxy = FreezableProxy(server)
    partitioned = runners["a"]
    partitioned.kubeconfig = _through(operator_kubeconfig, proxy, tmp_path / "through-proxy")
    try:
        partitioned.start()
        eventually(
            lambda: True if _leader_gauge(partitioned.process) == 1 else None, what="replica a to lead"
        )
        runners["b"].start()
        cluster.create(tuning_job("before-partition", suspend=True))
        cluster.job("before-partition-train")

        proxy.frozen.set()  # replica a's requests, the Lease renewal among them, now hang
        cut = time.monotonic()
        assert partitioned.popen is not None
        partitioned.popen.wait(timeout=RENEW_DEADLINE_S + 2 * RETRY_PERIOD_S)
        stopped = time.monotonic() - cut
        assert partitioned.popen.returncode == 1
        assert "was not renewed" in partitioned.process.log.read_text()
        _leads(runners["b"], timeout=LEASE_DURATION_S + 4 * RETRY_PERIOD_S)
        led = time.monotonic() - cut
        print(f"partitioned leader exited after {stopped:.1f}s; the standby led after {led:.1f}s")
        assert stopped < led  # the old leader had stopped writing before the new one started
        cluster.create(tuning_job("after-partition", suspend=True))
        cluster.job("after-partition-train")
    finally:
        proxy.close()
