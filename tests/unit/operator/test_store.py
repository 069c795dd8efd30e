"""The operator's watch store and work queue: newest-wins entries, relists that forget what is
gone, dependents, and coalescing of queued keys."""

from __future__ import annotations

import threading
from typing import Any

from labtune.operator.machinery.watch_store import Store
from labtune.operator.machinery.work_queue import WorkQueue


def run(name: str, version: str, state: str = "Pending", ref: str | None = None) -> dict[str, Any]:
    data = {"syntheticDataRunRef": {"name": ref}} if ref else {"knowledge": "pvc://d/k.jsonl"}
    return {
        "apiVersion": "labtune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": version,
            "managedFields": [],
        },
        "spec": {"data": data},
        "status": {"state": state},
    }


def job(name: str, version: str, active: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
        "spec": {},
        "status": {"active": active},
    }


def test_a_late_event_does_not_undo_a_newer_body() -> None:
    store = Store()
    store.put_owner(run("a", "10", "Running"))
    assert store.put_owner(run("a", "9", "Pending"))["status"]["state"] == "Running"
    found = store.owner("TuningJob", "ns", "a")
    assert found is not None
    assert found["status"]["state"] == "Running"
    assert "managedFields" not in found["metadata"]
    store.put_owner(run("a", "11", "Succeeded"))
    assert (store.owner("TuningJob", "ns", "a") or {})["status"]["state"] == "Succeeded"


def test_relist_forgets_what_is_gone_but_keeps_what_events_showed_later() -> None:
    store = Store()
    store.put_job(job("gone", "5"))
    store.put_job(job("kept", "5"))
    store.put_job(job("newer", "30"))  # seen by an event after the list was taken
    store.relist_jobs([job("kept", "6", active=1)], "20")
    assert store.job("ns", "gone") is None
    kept = store.job("ns", "kept")
    assert kept is not None
    assert kept.active == 1
    assert store.job("ns", "newer") is not None


def test_dependents_follow_the_reference_and_deletion() -> None:
    store = Store()
    store.put_owner(run("a", "1", ref="sdg"))
    store.put_owner(run("b", "1", ref="sdg"))
    store.put_owner(run("c", "1"))
    assert sorted(store.dependents("TuningJob", "ns", "sdg")) == ["a", "b"]
    store.drop_owner("TuningJob", "ns", "a")
    assert store.dependents("TuningJob", "ns", "sdg") == ["b"]
    store.relist("TuningJob", [run("c", "2")], "2")
    assert store.dependents("TuningJob", "ns", "sdg") == []


def test_a_key_queued_twice_before_it_runs_runs_once() -> None:
    gate, done = threading.Event(), threading.Semaphore(0)
    calls: list[str] = []

    def work(tag: str) -> None:
        gate.wait()
        calls.append(tag)
        done.release()

    queue = WorkQueue(threads=1)
    queue.add(("K", "ns", "blocker"), lambda: work("blocker"))
    queue.add(("K", "ns", "a"), lambda: work("a1"))
    queue.add(("K", "ns", "a"), lambda: work("a2"))
    gate.set()
    for _ in range(2):
        assert done.acquire(timeout=5)
    assert not done.acquire(timeout=0.3)
    assert calls == ["blocker", "a1"]
