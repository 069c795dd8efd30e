"""Faults around the TuningJob operator on the real API server: children removed by the TTL
controller after completion, the operator SIGKILLed in the middle of its work, and status writes
that conflict with another writer."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client
from kubetest import Cluster, Kubelet, OperatorRunner, eventually, tuning_job

from labtune.api import GROUP, VERSION

pytestmark = pytest.mark.usefixtures("operator_process")
RESYNC_S = 5  # the tests' operator runs with --resync-interval 5

SUMMARY = {
    "output": {"adapter": "pvc://labtune-artifacts/out/adapter", "adapterSha256": "a" * 64},
    "metrics": {"loss": 0.9, "evalLoss": 1.1},
    "bestEvalLoss": 1.1,
    "steps": 10,
    "tokens": 1000,
    "checkpoints": [],
}


def jobs_named(cluster: Cluster, prefix: str) -> list[str]:
    found = cluster.batch.list_namespaced_job(cluster.namespace, _preload_content=False)
    names = [j["metadata"]["name"] for j in json.loads(found.data)["items"]]
    return sorted(n for n in names if n.startswith(prefix))


def test_ttl_removes_the_finished_job_and_the_run_keeps_its_status(
    cluster: Cluster, kubelet: Kubelet
) -> None:
    """kube-controller-manager's TTL-after-finished controller deletes the Job; the TuningJob keeps its
    outputs, and the operator neither recreates the Job nor touches the status (not even on resync)."""
    cluster.create(tuning_job("ttl", ttlSecondsAfterFinished=1))
    job = cluster.job("ttl-train")
    assert job["spec"]["ttlSecondsAfterFinished"] == 1
    kubelet.finish("ttl-train", 0, json.dumps(SUMMARY))
    done = cluster.status_when("tuningjobs", "ttl", lambda s: s.get("state") == "Succeeded", "success")
    version = cluster.get("tuningjobs", "ttl")["metadata"]["resourceVersion"]

    eventually(
        lambda: True if not jobs_named(cluster, "ttl") else None, timeout=60, what="the TTL controller"
    )
    time.sleep(2 * RESYNC_S + 2)  # the Job's DELETED event and two resyncs have come and gone

    assert jobs_named(cluster, "ttl") == []
    after = cluster.get("tuningjobs", "ttl")
    assert after["metadata"]["resourceVersion"] == version  # not one status write
    assert after["status"] == done
    assert after["status"]["output"] == SUMMARY["output"]
    assert "restarts" not in after["status"] or after["status"]["restarts"] == 0


def test_sigkill_mid_reconcile_then_restart_makes_no_duplicates(
    cluster: Cluster, operator_runner: OperatorRunner
) -> None:
    """The operator is killed while it is creating children for a burst of TuningJobs (some with a
    Job and no status yet, some with nothing); the restarted one adopts what exists and finishes."""
    count = 60
    names = [f"burst-{i}" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        creating = pool.map(lambda n: cluster.create(tuning_job(n, suspend=True)), names)
        eventually(lambda: True if len(jobs_named(cluster, "burst-")) >= 5 else None, what="the first Jobs")
        operator_runner.kill()
        list(creating)
    made_before_restart = len(jobs_named(cluster, "burst-"))
    assert made_before_restart < count, "the kill came too late to test anything"
    operator_runner.start()

    def all_suspended() -> bool | None:
        items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, cluster.namespace, "tuningjobs")
        states = [(t.get("status") or {}).get("state") for t in items["items"]]
        return True if states.count("Suspended") == count else None

    eventually(all_suspended, timeout=90, what=f"{count} TuningJobs to reach Suspended")
    assert jobs_named(cluster, "burst-") == sorted(f"{n}-train" for n in names)
    config_maps = cluster.core.list_namespaced_config_map(cluster.namespace).items
    assert sorted(m.metadata.name for m in config_maps if m.metadata.name.startswith("burst-")) == sorted(
        f"{n}-train" for n in names
    )
    for name in names:
        status = cluster.get("tuningjobs", name)["status"]
        assert status["jobName"] == f"{name}-train"
        assert status.get("restarts", 0) == 0  # adopted, not recreated


def _status_conflicts(api_client: client.ApiClient) -> int:
    """409 answers the API server gave to TuningJob status writes, from its own /metrics."""
    request = api_client.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    text = api_client.call_api(*request).read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and all(
            f'{key}="{value}"' in line
            for key, value in (("code", "409"), ("resource", "tuningjobs"), ("subresource", "status"))
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_conflicting_status_writes_are_retried(cluster: Cluster, kubelet: Kubelet) -> None:
    """Another writer patches the status (as a person with kubectl might) over and over while the
    operator records the outcome: the operator's writes, made with the resourceVersion they were
    computed from, meet 409 Conflict, read again and retry — no crash, no lost outcome."""
    api_client = cluster.custom.api_client
    cluster.create(tuning_job("contended"))
    cluster.job("contended-train")
    cluster.status_when("tuningjobs", "contended", lambda s: s.get("jobName"), "the Job named")
    conflicts_before = _status_conflicts(api_client)
    stop = threading.Event()

    def other_writer() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            cluster.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                cluster.namespace,
                "tuningjobs",
                "contended",
                {"status": {"progress": {"step": step}}},
            )

    writer = threading.Thread(target=other_writer)
    writer.start()
    try:
        kubelet.finish("contended-train", 0, json.dumps(SUMMARY))
        time.sleep(4)
    finally:
        stop.set()
        writer.join()

    status = cluster.status_when(
        "tuningjobs", "contended", lambda s: s.get("state") == "Succeeded", "success"
    )
    assert status["output"] == SUMMARY["output"]
    assert _status_conflicts(api_client) > conflicts_before
