"""Kueue for real: the Kueue controller built from its Go module (labtune_dev.kueue) and the operator
on the local control plane. Two TuningJobs in a LocalQueue whose ClusterQueue has one GPU of quota,
each asking for one GPU: Kueue admits one (the operator made its Job suspended and leaves `suspend`
to Kueue), the other stays queued and its TuningJob says so with Kueue's reason, and it runs once the
first has finished."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubetest import Cluster, Kubelet, condition, eventually, tuning_job
from kueuetest import gpu_queue

from labtune_dev.kueue import QUEUE_NAME_LABEL, KueueController

pytestmark = pytest.mark.usefixtures("operator_process")
TRAINED = {
    "output": {"adapter": "pvc://labtune-artifacts/out/adapter", "adapterSha256": "a" * 64},
    "metrics": {"loss": 0.9},
    "steps": 8,
}
RUNS = ("gpu-a", "gpu-b")


def _state(cluster: Cluster, name: str) -> str | None:
    state: str | None = (cluster.get("tuningjobs", name).get("status") or {}).get("state")
    return state


def test_one_gpu_of_quota_runs_one_tuning_job_at_a_time(
    api_client: client.ApiClient,
    namespace: str,
    cluster: Cluster,
    kubelet: Kubelet,
    gpu_node: str,
    kueue: KueueController,
) -> None:
    with gpu_queue(api_client, namespace) as (kq, local_queue):
        for name in RUNS:
            body: dict[str, Any] = tuning_job(name, resources={"gpusPerNode": 1})
            body["metadata"]["labels"] = {QUEUE_NAME_LABEL: local_queue}
            cluster.create(body)

        def admitted_and_queued() -> tuple[str, str] | None:
            states = {name: _state(cluster, name) for name in RUNS}
            queued = [n for n, s in states.items() if s == "Queued"]
            started = [n for n, s in states.items() if s in ("Pending", "Running")]
            if len(started) > 1:
                pytest.fail(f"both TuningJobs started with one GPU of quota: {states}")
            return (started[0], queued[0]) if started and queued else None

        first, second = eventually(
            admitted_and_queued, 90, "Kueue to admit one TuningJob and queue the other"
        )

        def says_why() -> dict[str, Any] | None:
            waiting = condition(cluster.get("tuningjobs", second)["status"], "Waiting")
            return waiting if waiting.get("reason") == "Pending" else None

        # Kueue's Workload condition reaches the run at its next reconciliation (the resync at worst).
        waiting = eventually(says_why, 90, f"{second} to carry Kueue's reason")
        assert waiting["status"] == "True"
        assert "insufficient unused quota for nvidia.com/gpu" in waiting["message"]
        assert condition(cluster.get("tuningjobs", second)["status"], "Ready")["reason"] == "Pending"
        assert kq.suspended(f"{second}-train")
        assert not kq.suspended(f"{first}-train")

        kubelet.finish(f"{first}-train", 0, json.dumps(TRAINED))
        cluster.status_when("tuningjobs", first, lambda s: s.get("state") == "Succeeded", "succeeded", 90)
        eventually(
            lambda: True if _state(cluster, second) in ("Pending", "Running") else None,
            90,
            f"Kueue to admit {second} once {first} finished",
        )
        assert not kq.suspended(f"{second}-train")
        kq.reap_deleted_pods()
