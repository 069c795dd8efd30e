"""The shared run loop (runs/run_reconcile.py, runs/run_worker.py) against an in-memory fake of the
API client and the real watch store: each state transition of a TuningJob, idempotence, the 409
retry, and the wait for a SyntheticDataRun and its release. No control plane; runs in well under
a second."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_kube import FakeKube

from labtune.api import API_VERSION
from labtune.operator.machinery.context import Context
from labtune.operator.machinery.retries import RetryLater
from labtune.operator.machinery.watch_store import Store
from labtune.operator.machinery.work_queue import WorkQueue
from labtune.operator.runs.run_reconcile import StaleBody, Transition, reconcile_run
from labtune.operator.runs.run_worker import run_once
from labtune.operator.settings import OperatorSettings
from labtune.operator.tuning_job.tuning_job_reconcile import TuningJobKind

KIND = TuningJobKind()
SDG_META = {"name": "sdg", "namespace": "ns"}
SETTINGS = OperatorSettings()
NOW = datetime(2026, 12, 3, tzinfo=UTC)
JOB = "train-train"
SUMMARY = {
    "output": {"adapter": "pvc://labtune-artifacts/out/adapter", "adapterSha256": "a" * 64},
    "metrics": {"loss": 0.9},
    "steps": 10,
    "tokens": 1000,
    "checkpoints": [],
}


def tuning_job(**data: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "TuningJob",
        "metadata": {"name": "train", "namespace": "ns"},
        "spec": {
            "baseModel": {"uri": "pvc://models/base"},
            "data": data or {"knowledge": "pvc://data/k.jsonl", "skills": "pvc://data/s.jsonl"},
            "resources": {"gpusPerNode": 0},
        },
    }


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def store() -> Store:
    return Store()


def reconcile(kube: FakeKube, store: Store, fresh: bool = False) -> Transition | None:
    body = store.owner("TuningJob", "ns", "train") or store.put_owner(
        kube.get("TuningJob", "ns", "train") or {}
    )
    return reconcile_run(kube, store, body, KIND, SETTINGS, NOW, fresh=fresh)  # type: ignore[arg-type]


def job_moves(kube: FakeKube, store: Store, status: dict[str, Any]) -> None:
    """What the Job controller writes and the watch then shows."""
    job = kube.get("Job", "ns", JOB)
    assert job is not None
    store.put_job(kube.put({**job, "status": status}))


def state(kube: FakeKube) -> tuple[str, str]:
    status = (kube.get("TuningJob", "ns", "train") or {})["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    return status["state"], ready["reason"]


def finished_pod(kube: FakeKube) -> None:
    kube.put_job_pod("TuningJob", "train", JOB, 0, json.dumps(SUMMARY))


def test_every_transition_from_creation_to_success(kube: FakeKube, store: Store) -> None:
    kube.put(tuning_job())
    steps: list[tuple[str, str, bool]] = []

    def step() -> None:
        transition = reconcile(kube, store)
        steps.append((*state(kube), transition is not None))

    step()  # children made, the Job named in status
    assert [w for w in kube.writes if w[0] == "create"] == [("create", "ConfigMap"), ("create", "Job")]
    writes = len(kube.writes)
    step()  # nothing changed: nothing written, no transition
    assert len(kube.writes) == writes
    job_moves(kube, store, {"active": 1})
    step()
    job_moves(kube, store, {"active": 1, "ready": 1})
    step()
    job_moves(kube, store, {"succeeded": 1, "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]})
    step()  # the pods are done, the Job not yet Complete: still running, no new Event
    finished_pod(kube)
    complete = [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]
    job_moves(kube, store, {"succeeded": 1, "conditions": complete, "completionTime": "2026-12-03T00:01:00Z"})
    step()
    assert steps == [
        ("Pending", "JobCreated", True),
        ("Pending", "JobCreated", False),
        ("Pending", "PodsStarting", True),
        ("Running", "JobRunning", True),
        ("Running", "JobRunning", False),
        ("Succeeded", "Succeeded", True),
    ]
    status = (kube.get("TuningJob", "ns", "train") or {})["status"]
    assert status["output"] == SUMMARY["output"]
    assert status["metrics"]["loss"] == 0.9
    assert reconcile(kube, store) is None  # finished runs are final


def test_a_status_write_that_meets_409_is_read_again_and_retried(kube: FakeKube, store: Store) -> None:
    kube.put(tuning_job())
    context = Context(kube, SETTINGS, WorkQueue(threads=0), store=store)  # type: ignore[arg-type]
    kube.conflicts_to_inject = 2
    run_once(context, KIND, "ns", "train")
    assert state(kube) == ("Pending", "JobCreated")
    assert [w for w in kube.writes if w[0] == "create"] == [("create", "ConfigMap"), ("create", "Job")]

    kube.conflicts_to_inject = 100  # another writer that never stops: handed to the retries
    job_moves(kube, store, {"active": 1, "ready": 1})
    with pytest.raises(RetryLater, match="409 Conflict 5 times"):
        run_once(context, KIND, "ns", "train")


def test_a_run_waits_for_its_synthetic_data_run_and_is_released_by_it(kube: FakeKube, store: Store) -> None:
    kube.put(tuning_job(syntheticDataRunRef={"name": "sdg"}))
    assert reconcile(kube, store) is not None
    assert state(kube) == ("Waiting", "SyntheticDataRunNotFound")
    assert store.dependents("TuningJob", "ns", "sdg") == ["train"]
    sdg = {
        "apiVersion": API_VERSION,
        "kind": "SyntheticDataRun",
        "metadata": {"name": "sdg", "namespace": "ns"},
    }
    kube.put({**sdg, "status": {"state": "Running"}})
    reconcile(kube, store)
    assert state(kube) == ("Waiting", "WaitingForSyntheticDataRun")
    outputs = {
        name: {"uri": f"pvc://data/out/{name}.jsonl", "samples": 5, "sha256": "b" * 64}
        for name in ("knowledge", "skills")
    }
    kube.put({**sdg, "status": {"state": "Succeeded", "outputs": outputs}})
    reconcile(kube, store)
    assert state(kube) == ("Pending", "JobCreated")
    config = (kube.get("ConfigMap", "ns", JOB) or {})["data"]["config.yaml"]
    assert "pvc://data/out/knowledge.jsonl" in config


def test_a_failed_synthetic_data_run_fails_the_run_for_good(kube: FakeKube, store: Store) -> None:
    kube.put(tuning_job(syntheticDataRunRef={"name": "sdg"}))
    sdg = {
        "apiVersion": API_VERSION,
        "kind": "SyntheticDataRun",
        "metadata": {"name": "sdg", "namespace": "ns"},
    }
    kube.put({**sdg, "status": {"state": "Failed"}})
    reconcile(kube, store)
    assert state(kube) == ("Failed", "SyntheticDataRunFailed")
    assert not [w for w in kube.writes if w[0] == "create"]


def test_suspend_and_resume_follow_the_spec(kube: FakeKube, store: Store) -> None:
    kube.put(tuning_job())
    reconcile(kube, store)
    job_moves(kube, store, {"active": 1, "ready": 1})
    reconcile(kube, store)
    body = kube.get("TuningJob", "ns", "train") or {}
    kube.put({**body, "spec": {**body["spec"], "suspend": True}})
    store.put_owner(kube.get("TuningJob", "ns", "train") or {})
    reconcile(kube, store)
    assert (kube.get("Job", "ns", JOB) or {})["spec"]["suspend"] is True
    assert state(kube) == ("Suspended", "Suspended")
    suspended = {
        c["type"]: c["status"] for c in (kube.get("TuningJob", "ns", "train") or {})["status"]["conditions"]
    }
    assert (suspended["Suspended"], suspended["Running"]) == ("True", "False")

    body = kube.get("TuningJob", "ns", "train") or {}
    kube.put({**body, "spec": {**body["spec"], "suspend": False}})
    store.put_owner(kube.get("TuningJob", "ns", "train") or {})
    job_moves(kube, store, {})  # the Job controller removed the pods while suspended
    reconcile(kube, store)
    assert (kube.get("Job", "ns", JOB) or {})["spec"]["suspend"] is False
    assert state(kube) == ("Pending", "JobCreated")


def test_a_job_deleted_under_a_started_run_is_made_again_and_counted(kube: FakeKube, store: Store) -> None:
    kube.put(tuning_job())
    reconcile(kube, store)
    kube.delete("Job", "ns", JOB)
    store.drop_job("ns", JOB)
    with pytest.raises(StaleBody):  # a watched body may predate the run's end: never acted on
        reconcile(kube, store)
    store.put_owner(kube.get("TuningJob", "ns", "train") or {})
    reconcile(kube, store, fresh=True)
    assert kube.get("Job", "ns", JOB) is not None
    status = (kube.get("TuningJob", "ns", "train") or {})["status"]
    assert (status["restarts"], status["startTime"]) == (1, "2026-12-03T00:00:00Z")


def test_a_failed_job_fails_the_run_with_its_reason(kube: FakeKube, store: Store) -> None:
    kube.put(tuning_job())
    reconcile(kube, store)
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
    job_moves(kube, store, {"failed": 3, "conditions": [failed]})
    transition = reconcile(kube, store)
    assert transition is not None
    assert transition.old_state == "Pending"
    assert state(kube) == ("Failed", "BackoffLimitExceeded")
    status = (kube.get("TuningJob", "ns", "train") or {})["status"]
    assert status["restarts"] == 3
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "True"
    assert status["completionTime"] == "2026-12-03T00:00:00Z"


def test_a_spec_change_after_the_end_is_observed_and_nothing_else(kube: FakeKube, store: Store) -> None:
    """kstatus and Argo CD wait for observedGeneration: a finished run acknowledges a later spec
    change (suspend) without touching its outcome or children."""
    done = {"state": "Succeeded", "completionTime": "2026-12-03T00:01:00Z", "observedGeneration": 1}
    body = kube.put({**tuning_job(), "status": done})
    kube.put(
        {**body, "metadata": {**body["metadata"], "generation": 2}, "spec": {**body["spec"], "suspend": True}}
    )
    assert reconcile(kube, store, fresh=True) is None
    status = (kube.get("TuningJob", "ns", "train") or {})["status"]
    assert (status["observedGeneration"], status["state"]) == (2, "Succeeded")
    assert [w for w in kube.writes if w[0] == "create"] == []
    writes = len(kube.writes)
    store.put_owner(kube.get("TuningJob", "ns", "train") or {})
    assert reconcile(kube, store) is None
    assert len(kube.writes) == writes


def test_a_run_managed_by_another_controller_is_left_alone(kube: FakeKube, store: Store) -> None:
    body = tuning_job()
    body["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    kube.put(body)
    assert reconcile(kube, store) is None
    assert kube.writes == []
    body["spec"]["managedBy"] = "labtune.io/operator"
    store.put_owner(kube.put(body))
    reconcile(kube, store)
    assert [w for w in kube.writes if w[0] == "create"] == [("create", "ConfigMap"), ("create", "Job")]


def _queued(kube: FakeKube, store: Store) -> dict[str, Any]:
    body = tuning_job()
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a"}
    kube.put(body)
    reconcile(kube, store)
    job = kube.get("Job", "ns", JOB)
    assert job is not None
    return job


def test_a_kueue_job_starts_suspended_and_says_why_kueue_holds_it(kube: FakeKube, store: Store) -> None:
    job = _queued(kube, store)
    assert job["spec"]["suspend"] is True  # Kueue admits it by unsuspending it
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert state(kube) == ("Queued", "WaitingForKueue")
    reserved = {
        "type": "QuotaReserved",
        "status": "False",
        "reason": "Pending",
        "message": "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu",
    }
    kube.put(
        {
            "kind": "Workload",
            "metadata": {
                "name": "job-train",
                "namespace": "ns",
                "ownerReferences": [{"uid": job["metadata"]["uid"]}],
            },
            "spec": {"active": True},
            "status": {"conditions": [reserved]},
        }
    )
    store.put_owner(kube.get("TuningJob", "ns", "train") or {})
    reconcile(kube, store)
    status = (kube.get("TuningJob", "ns", "train") or {})["status"]
    waiting = next(c for c in status["conditions"] if c["type"] == "Waiting")
    assert (status["state"], waiting["status"], waiting["reason"]) == ("Queued", "True", "Pending")
    assert "insufficient unused quota for nvidia.com/gpu" in waiting["message"]
    stored = kube.get("Job", "ns", JOB)
    assert stored is not None
    assert stored["spec"]["suspend"] is True, "the operator never unsuspends a Kueue Job"

    job_moves(kube, store, {})  # Kueue admitted it: unsuspended
    admitted = kube.get("Job", "ns", JOB)
    assert admitted is not None
    store.put_job(kube.put({**admitted, "spec": {**admitted["spec"], "suspend": False}}))
    store.put_owner(kube.get("TuningJob", "ns", "train") or {})
    reconcile(kube, store)
    assert state(kube) == ("Pending", "JobCreated")


def test_suspending_a_kueue_run_deactivates_its_workload(kube: FakeKube, store: Store) -> None:
    job = _queued(kube, store)
    workload = {"name": "job-train", "namespace": "ns", "ownerReferences": [{"uid": job["metadata"]["uid"]}]}
    kube.put({"kind": "Workload", "metadata": workload, "spec": {"active": True}})
    store.put_job(kube.put({**job, "spec": {**job["spec"], "suspend": False}}))  # admitted
    body = kube.get("TuningJob", "ns", "train") or {}
    store.put_owner(kube.put({**body, "spec": {**body["spec"], "suspend": True}}))
    reconcile(kube, store)
    assert (kube.get("Workload", "ns", "job-train") or {})["spec"]["active"] is False
    assert (kube.get("Job", "ns", JOB) or {})["spec"]["suspend"] is False, (
        "Kueue suspends it, not the operator"
    )
    body = kube.get("TuningJob", "ns", "train") or {}
    store.put_owner(kube.put({**body, "spec": {**body["spec"], "suspend": False}}))
    reconcile(kube, store)
    assert (kube.get("Workload", "ns", "job-train") or {})["spec"]["active"] is True
