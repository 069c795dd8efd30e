"""A Taxonomy's reconciliation (taxonomy/taxonomy_reconcile.py) against the in-memory fake client:
one sync Job per spec generation and interval tick, never two at once, and what each finished sync
says in status and conditions. No control plane."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_kube import FakeKube

from labtune.api import API_VERSION
from labtune.operator.children.child_names import selector
from labtune.operator.settings import OperatorSettings
from labtune.operator.taxonomy.taxonomy_builders import sync_job_name
from labtune.operator.taxonomy.taxonomy_reconcile import reconcile_taxonomy

SETTINGS = OperatorSettings()
NOW = datetime(2026, 12, 3, 1, tzinfo=UTC)
TICK = 600.0  # spec.interval 10m
COMMIT = "c" * 40
MANIFEST = "pvc://labtune-artifacts/ns/tax/manifest.json"


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.put(
        {
            "apiVersion": API_VERSION,
            "kind": "Taxonomy",
            "metadata": {"name": "tax", "namespace": "ns"},
            "spec": {"source": {"git": {"url": "https://git.example.com/taxonomy.git"}}, "interval": "10m"},
        }
    )
    return fake


def reconcile(kube: FakeKube, epoch: float) -> tuple[str, str] | None:
    body = kube.get("Taxonomy", "ns", "tax")
    assert body is not None
    return reconcile_taxonomy(kube, body, SETTINGS, NOW, epoch)  # type: ignore[arg-type]


def sync_jobs(kube: FakeKube) -> list[str]:
    return [job["metadata"]["name"] for job in kube.list_jobs("ns", selector("Taxonomy", "tax"))]


def finish(kube: FakeKube, job: str, summary: dict[str, Any] | None) -> None:
    """The sync pod ends (with its summary, or failing) and the Job controller marks the Job."""
    kube.put_job_pod("Taxonomy", "tax", job, 0 if summary is not None else 1, json.dumps(summary or {}))
    stored = kube.get("Job", "ns", job)
    assert stored is not None
    condition = {"type": "Complete" if summary is not None else "Failed", "status": "True", "reason": "X"}
    kube.put({**stored, "status": {"conditions": [condition], "completionTime": "2026-12-03T01:00:00Z"}})


def summary(errors: int = 0, total: int = 3) -> dict[str, Any]:
    issue = {"path": "knowledge/a/qna.yaml", "line": 4, "message": "missing seed_examples"}
    return {
        "commit": COMMIT,
        "leafCounts": {"knowledge": min(1, total), "freeformSkills": max(0, total - 1), "total": total},
        "changedLeaves": ["knowledge/a/qna.yaml"],
        "changedLeafCount": 1,
        "errors": [issue] * errors,
        "errorCount": errors,
        "manifest": MANIFEST,
    }


def status(kube: FakeKube) -> dict[str, Any]:
    return (kube.get("Taxonomy", "ns", "tax") or {})["status"]


def condition(kube: FakeKube, type_: str) -> tuple[str, str] | None:
    found = next((c for c in status(kube).get("conditions", []) if c["type"] == type_), None)
    return (found["status"], found["reason"]) if found else None


def test_one_sync_per_generation_and_tick_and_its_result_in_status(kube: FakeKube) -> None:
    assert reconcile(kube, 10 * TICK) == (
        "Syncing",
        f"first sync ({sync_job_name('tax', 1, '10m', 6000)}) in progress",
    )
    first = sync_jobs(kube)
    assert len(first) == 1
    assert condition(kube, "Reconciling") == ("True", "Syncing")
    writes = len(kube.writes)
    assert reconcile(kube, 10 * TICK + 1) is None  # same tick, still running: nothing new
    assert len(kube.writes) == writes

    finish(kube, first[0], summary())
    assert reconcile(kube, 10 * TICK + 2) == ("Synced", f"synced {COMMIT[:12]}: 3 leaves, 1 changed")
    got = status(kube)
    assert (got["revision"], got["leafCounts"]["total"], got["manifest"]) == (COMMIT, 3, MANIFEST)
    assert got["lastSyncTime"] == "2026-12-03T01:00:00Z"
    assert condition(kube, "Validated") == ("True", "Valid")
    assert condition(kube, "Reconciling") is None
    writes = len(kube.writes)
    assert reconcile(kube, 10 * TICK + 3) is None  # the finished sync is already reported
    assert len(kube.writes) == writes

    assert reconcile(kube, 11 * TICK) is None  # next tick: a new sync, Ready stays with the revision
    assert len(sync_jobs(kube)) == 2
    assert condition(kube, "Ready") == ("True", "Synced")
    assert condition(kube, "Reconciling") == ("True", "Syncing")


def test_a_spec_change_waits_for_the_running_sync_then_starts_its_own(kube: FakeKube) -> None:
    reconcile(kube, 0)
    (first,) = sync_jobs(kube)
    tax = kube.get("Taxonomy", "ns", "tax")
    assert tax is not None
    tax["metadata"]["generation"] = 2
    kube.put(tax)
    reconcile(kube, 1)
    assert sync_jobs(kube) == [first]  # never two syncs at once
    finish(kube, first, summary())
    reconcile(kube, 2)
    assert sync_jobs(kube) == [first, sync_job_name("tax", 2, "10m", 2)]
    assert status(kube)["observedGeneration"] == 2


@pytest.mark.parametrize(
    ("result", "ready", "validated", "stalled"),
    [
        (summary(errors=2), ("False", "ValidationFailed"), ("False", "ValidationFailed"), None),
        (summary(total=0), ("False", "NoLeaves"), ("False", "NoLeaves"), None),
        (None, ("False", "SyncFailed"), None, ("True", "SyncFailed")),
        ({"commit": COMMIT}, ("False", "InvalidSummary"), None, ("True", "InvalidSummary")),
    ],
)
def test_what_a_bad_sync_says(
    kube: FakeKube,
    result: dict[str, Any] | None,
    ready: tuple[str, str],
    validated: tuple[str, str] | None,
    stalled: tuple[str, str] | None,
) -> None:
    reconcile(kube, 0)
    (job,) = sync_jobs(kube)
    finish(kube, job, result)
    changed = reconcile(kube, 1)
    assert changed is not None
    assert changed[0] == ready[1]
    assert (condition(kube, "Ready"), condition(kube, "Validated"), condition(kube, "Stalled")) == (
        ready,
        validated,
        stalled,
    )
    if result and "errorCount" in result:
        assert status(kube)["errorCount"] == result["errorCount"]
    assert changed[1]  # a message a person can act on, never empty


@pytest.mark.parametrize(("errors", "listed"), [(1, 1), (200, 50)])
def test_validation_errors_beyond_the_status_list_point_at_the_manifest(
    kube: FakeKube, errors: int, listed: int
) -> None:
    reconcile(kube, 0)
    (job,) = sync_jobs(kube)
    finish(kube, job, summary(errors=errors) | {"errors": summary(errors=min(errors, 60))["errors"]})
    changed = reconcile(kube, 1)
    assert changed is not None
    got = status(kube)
    assert (got["errorCount"], len(got["errors"])) == (errors, listed)
    assert changed[1].startswith(
        f"{errors} validation error(s) at {COMMIT[:12]}; first: knowledge/a/qna.yaml:4"
    )
    assert changed[1].endswith(f"; all of them in {MANIFEST}") == (errors > listed)
