"""A LabPipeline's reconciliation (lab_pipeline/lab_pipeline_reconcile.py) against the in-memory fake
client: one run per leaves digest, stamped from the templates; Queue, Replace and Forbid while a run
is active; suspend; the history limit; the latest model and gate in status. No control plane."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube import FakeKube

from labtune.api import API_VERSION, LabPipeline
from labtune.operator.lab_pipeline.lab_pipeline_builders import run_name
from labtune.operator.lab_pipeline.lab_pipeline_reconcile import Event, reconcile_lab_pipeline

A, B, C = "a" * 40, "b" * 40, "c" * 40
X, Y, Z = "1" * 64, "2" * 64, "3" * 64
ADAPTER = "pvc://labtune-artifacts/models/lab-aaaa/adapter"


def _pipeline(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "LabPipeline",
        "metadata": {"name": "lab", "namespace": "ns"},
        "spec": {
            "taxonomyRef": {"name": "tax"},
            "syntheticDataRunTemplate": {
                "metadata": {"labels": {"kueue.x-k8s.io/queue-name": "gpu"}},
                "spec": {
                    "teacher": {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}},
                    "leaves": "all",
                    "output": "pvc://labtune-artifacts/datasets",
                },
            },
            "tuningJobTemplate": {
                "spec": {
                    "baseModel": {"uri": "pvc://labtune-artifacts/models/base"},
                    "output": {"uri": "pvc://labtune-artifacts/models"},
                }
            },
            **spec,
        },
    }


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.put(_pipeline())
    return fake


def taxonomy(kube: FakeKube, revision: str, digest: str | None, ready: bool = True) -> None:
    ready_condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "Synced" if ready else "ValidationFailed",
        "message": "synced" if ready else "1 validation error",
        "lastTransitionTime": "2026-12-03T00:00:00Z",
    }
    status: dict[str, Any] = {"revision": revision, "conditions": [ready_condition]}
    if digest:
        status["leavesDigest"] = digest
    kube.put(
        {"kind": "Taxonomy", "metadata": {"name": "tax", "namespace": "ns"}, "spec": {}, "status": status}
    )


def reconcile(kube: FakeKube) -> tuple[dict[str, Any], list[Event]]:
    body = kube.get("LabPipeline", "ns", "lab")
    assert body is not None
    _, events = reconcile_lab_pipeline(kube, body)  # type: ignore[arg-type]
    found = kube.get("LabPipeline", "ns", "lab")
    assert found is not None
    return found.get("status") or {}, events


def runs(kube: FakeKube, kind: str = "SyntheticDataRun") -> list[str]:
    return sorted(name for (k, _, name) in kube.objects if k == kind)


def finish(kube: FakeKube, revision: str, state: str = "Succeeded", gate: bool | None = None) -> None:
    """The revision's runs end: the SyntheticDataRun succeeded, the TuningJob in `state`."""
    name = run_name("lab", revision)
    data = kube.get("SyntheticDataRun", "ns", name)
    assert data is not None
    kube.put({**data, "status": {"state": "Succeeded"}})
    job = kube.get("TuningJob", "ns", name)
    assert job is not None
    status: dict[str, Any] = {"state": state}
    if state == "Succeeded":
        status["output"] = {"adapter": ADAPTER}
    if gate is not None:
        scores = {"benchmark": "held-out", "metric": "nll", "base": 3.0, "tuned": 2.0, "improvement": 1.0}
        status["evaluation"] = {
            "benchmarks": [],
            "checkpoint": {
                "phase": "skills",
                "step": 10,
                "uri": "pvc://labtune-artifacts/x/checkpoint-10",
                "selectedBy": "evalLoss",
                "candidates": 1,
            },
            "gate": {**scores, "minImprovement": 0.5, "passed": gate},
            "summary": "pvc://labtune-artifacts/x/summary.json",
            "seconds": 1.0,
        }
    kube.put({**job, "status": status})


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_waits_for_its_taxonomy_then_stamps_one_run_per_revision(kube: FakeKube) -> None:
    status, events = reconcile(kube)
    assert (status["state"], ready(status)["reason"]) == ("Waiting", "TaxonomyNotFound")
    assert runs(kube) == []
    taxonomy(kube, A, X, ready=False)
    status, _ = reconcile(kube)
    assert ready(status)["reason"] == "WaitingForTaxonomy"
    assert "ValidationFailed" in ready(status)["message"]

    taxonomy(kube, A, X)
    status, events = reconcile(kube)
    name = run_name("lab", A)
    assert name == "lab-aaaaaaaaaaaa"
    assert runs(kube) == runs(kube, "TuningJob") == [name]
    assert (status["state"], status["active"]["name"], status["runs"]) == ("Running", name, 1)
    assert ("Normal", "Stamped", f"run {name} for revision {A[:12]}") in events
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "False", "Reconciling": "True"}

    data = kube.get("SyntheticDataRun", "ns", name)
    job = kube.get("TuningJob", "ns", name)
    assert data is not None
    assert job is not None
    assert data["spec"]["taxonomyRef"] == {"name": "tax", "revision": A}
    assert data["spec"]["output"] == f"pvc://labtune-artifacts/datasets/{name}"
    assert data["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    assert data["metadata"]["labels"]["labtune.io/labpipeline"] == "lab"
    assert data["metadata"]["ownerReferences"][0]["kind"] == "LabPipeline"
    assert job["spec"]["data"] == {"syntheticDataRunRef": {"name": name}}
    assert job["spec"]["output"]["uri"] == f"pvc://labtune-artifacts/models/{name}"
    # Stamped from the templates, they are valid resources of their kinds.
    LabPipeline.model_validate(kube.get("LabPipeline", "ns", "lab"))

    writes = len(kube.writes)
    assert reconcile(kube)[1] == []
    assert len(kube.writes) == writes, "a second reconciliation changes nothing"


def test_a_revision_that_changes_no_leaf_runs_nothing(kube: FakeKube) -> None:
    taxonomy(kube, A, X)
    reconcile(kube)
    finish(kube, A)
    status, events = reconcile(kube)
    assert status["latestSucceeded"] == {
        "name": run_name("lab", A),
        "revision": A,
        "output": {"adapter": ADAPTER},
    }
    assert any(reason == "LatestModel" for _, reason, _ in events)
    taxonomy(kube, B, X)  # a README changed
    status, _ = reconcile(kube)
    assert runs(kube) == [run_name("lab", A)]
    assert (status["state"], status["taxonomyRevision"], ready(status)["status"]) == ("Idle", B, "True")
    assert "Reconciling" not in {c["type"] for c in status["conditions"]}


def test_queue_runs_the_newest_waiting_revision_when_the_active_one_ends(kube: FakeKube) -> None:
    taxonomy(kube, A, X)
    reconcile(kube)
    taxonomy(kube, B, Y)
    status, _ = reconcile(kube)
    assert (status["queuedRevision"], status["active"]["revision"]) == (B, A)
    taxonomy(kube, C, Z)
    assert reconcile(kube)[0]["queuedRevision"] == C
    finish(kube, A)
    status, _ = reconcile(kube)
    assert runs(kube) == sorted([run_name("lab", A), run_name("lab", C)])  # B's changes are in C
    assert (status["active"]["revision"], status["latestSucceeded"]["revision"]) == (C, A)
    assert "queuedRevision" not in status or status["queuedRevision"] is None


def test_replace_deletes_the_active_run_for_the_new_revision(kube: FakeKube) -> None:
    kube.put(_pipeline(concurrencyPolicy="Replace"))
    taxonomy(kube, A, X)
    reconcile(kube)
    taxonomy(kube, B, Y)
    status, events = reconcile(kube)
    assert runs(kube) == runs(kube, "TuningJob") == [run_name("lab", B)]
    assert status["active"]["revision"] == B
    assert any(reason == "Replaced" for _, reason, _ in events)


def test_forbid_skips_a_revision_that_arrives_while_a_run_is_active(kube: FakeKube) -> None:
    kube.put(_pipeline(concurrencyPolicy="Forbid"))
    taxonomy(kube, A, X)
    reconcile(kube)
    taxonomy(kube, B, Y)
    status, events = reconcile(kube)
    assert status["skippedRevisions"] == 1
    assert any(reason == "Skipped" for _, reason, _ in events)
    assert reconcile(kube)[0]["skippedRevisions"] == 1, "counted once"
    finish(kube, A)
    reconcile(kube)
    assert runs(kube) == [run_name("lab", A)]
    taxonomy(kube, C, Z)
    reconcile(kube)
    assert runs(kube) == sorted([run_name("lab", A), run_name("lab", C)])


def test_suspend_stamps_nothing_until_resumed(kube: FakeKube) -> None:
    kube.put(_pipeline(suspend=True))
    taxonomy(kube, A, X)
    status, _ = reconcile(kube)
    assert (status["state"], status["queuedRevision"], runs(kube)) == ("Suspended", A, [])
    kube.put(_pipeline(suspend=False))
    assert reconcile(kube)[0]["active"]["revision"] == A


def test_a_failed_run_is_stalled_until_the_leaves_change(kube: FakeKube) -> None:
    taxonomy(kube, A, X)
    reconcile(kube)
    finish(kube, A, "Failed")
    status, events = reconcile(kube)
    assert (status["state"], ready(status)["reason"]) == ("Failed", "RunFailed")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "True"
    assert ("Warning", "RunFailed") in {(t, r) for t, r, _ in events}
    taxonomy(kube, B, Y)
    status, _ = reconcile(kube)
    assert status["state"] == "Running"
    assert "Stalled" not in {c["type"] for c in status["conditions"]}


def test_history_keeps_the_newest_and_the_latest_model(kube: FakeKube) -> None:
    kube.put(_pipeline(historyLimit=1))
    for revision, digest, state in ((A, X, "Succeeded"), (B, Y, "Failed"), (C, Z, "Failed")):
        taxonomy(kube, revision, digest)
        reconcile(kube)
        finish(kube, revision, state)
    status, _ = reconcile(kube)
    # C is the newest finished run; A produced the latest model; B goes.
    assert runs(kube) == runs(kube, "TuningJob") == sorted([run_name("lab", A), run_name("lab", C)])
    assert status["latestSucceeded"]["revision"] == A
    assert status["runs"] == 3


def test_the_latest_run_that_passed_its_gate(kube: FakeKube) -> None:
    taxonomy(kube, A, X)
    reconcile(kube)
    finish(kube, A, gate=True)
    status, _ = reconcile(kube)
    assert status["latestGatePassed"]["revision"] == A
    assert status["latestSucceeded"]["gatePassed"] is True
    taxonomy(kube, B, Y)
    reconcile(kube)
    finish(kube, B, "Failed", gate=False)
    status, _ = reconcile(kube)
    assert (status["latestGatePassed"]["revision"], status["state"]) == (A, "Failed")


def test_a_pipeline_without_a_tuning_job_template_generates_only(kube: FakeKube) -> None:
    body = _pipeline()
    del body["spec"]["tuningJobTemplate"]
    kube.put(body)
    taxonomy(kube, A, X)
    reconcile(kube)
    assert (runs(kube), runs(kube, "TuningJob")) == ([run_name("lab", A)], [])
    data = kube.get("SyntheticDataRun", "ns", run_name("lab", A))
    assert data is not None
    kube.put({**data, "status": {"state": "Succeeded"}})
    status, _ = reconcile(kube)
    assert (status["state"], status["latestSucceeded"]["revision"]) == ("Idle", A)
