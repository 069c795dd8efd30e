"""What the watches last said: the labtune resources and their child Jobs, kept in memory so that a
reconciliation needs no API read in the common case.

The store is a cache, never the truth: a run's status is written with its resourceVersion as a
precondition (a stale body gets 409 and is read again), and a Job missing from the store is looked
up before anything is recreated. Entries never move back to an older resourceVersion, so a late
watch event cannot undo what a newer write or event already showed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from labtune.operator.children.job_observe import JobView, view_job

OwnerKey = tuple[str, str, str]
"""(kind, namespace, name)"""
JobKey = tuple[str, str]
"""(namespace, name)"""


def _version(body: Mapping[str, Any]) -> int | None:
    """The resourceVersion as a number. The API calls it opaque, but kube-apiserver on etcd hands
    out etcd revisions; anything else compares as unknown, which never blocks an update."""
    value = str(body["metadata"].get("resourceVersion") or "")
    return int(value) if value.isdigit() else None


def _newer(new: int | None, old: int | None) -> bool:
    return new is None or old is None or new >= old


def trim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconciliation reads of a run: no managedFields, no annotations."""
    meta = body["metadata"]
    kept = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "creationTimestamp")
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {key: meta[key] for key in kept if key in meta},
        "spec": body.get("spec") or {},
        "status": body.get("status") or {},
    }


def _pack(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _unpack(data: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(data)
    return body


def _reference(body: Mapping[str, Any]) -> str | None:
    spec = body.get("spec") or {}
    ref = (spec.get("data") or {}).get("syntheticDataRunRef") or spec.get("taxonomyRef") or {}
    name: str | None = ref.get("name")
    return name


def owner_key(body: Mapping[str, Any]) -> OwnerKey:
    return body["kind"], body["metadata"]["namespace"], body["metadata"]["name"]


class Store:
    """Thread-safe maps of run bodies and Job views, each entry with its resourceVersion."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Bodies as compact JSON: a few KB each instead of the tens of KB of nested dicts, which
        # matters when a restart lists thousands of runs at once.
        self._owners: dict[OwnerKey, tuple[int | None, bytes]] = {}
        self._jobs: dict[JobKey, tuple[int | None, JobView]] = {}
        self._refs: dict[OwnerKey, str] = {}  # what each run waits for (see `dependents`)

    def put_owner(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Keeps the body unless a newer one is already known; returns the newest."""
        key, version = owner_key(body), _version(body)
        with self._lock:
            known = self._owners.get(key)
            if known is None or _newer(version, known[0]):
                self._owners[key] = (version, _pack(trim(body)))
                self._refs.pop(key, None)
                if ref := _reference(body):
                    self._refs[key] = ref
            newest = self._owners[key][1]
        return _unpack(newest)

    def owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._owners.get((kind, namespace, name))
        return _unpack(found[1]) if found else None

    def owners(self, kind: str) -> list[dict[str, Any]]:
        """Every body of a kind the store holds."""
        with self._lock:
            packed = [data for (k, _, _), (_, data) in self._owners.items() if k == kind]
        return [_unpack(data) for data in packed]

    def drop_owner(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._owners.pop((kind, namespace, name), None)
            self._refs.pop((kind, namespace, name), None)

    def dependents(self, kind: str, namespace: str, name: str) -> list[str]:
        """Runs of a kind in the namespace that reference `name` (a TuningJob its SyntheticDataRun,
        a SyntheticDataRun its Taxonomy)."""
        with self._lock:
            return [n for (k, ns, n), ref in self._refs.items() if (k, ns, ref) == (kind, namespace, name)]

    def put_job(self, job: Mapping[str, Any]) -> JobView:
        """Keeps the Job's view unless a newer one is already known; returns the newest."""
        key, version = (job["metadata"]["namespace"], job["metadata"]["name"]), _version(job)
        with self._lock:
            known = self._jobs.get(key)
            if known is None or _newer(version, known[0]):
                self._jobs[key] = (version, view_job(job))
            return self._jobs[key][1]

    def job(self, namespace: str, name: str) -> JobView | None:
        with self._lock:
            found = self._jobs.get((namespace, name))
        return found[1] if found else None

    def drop_job(self, namespace: str, name: str) -> None:
        with self._lock:
            self._jobs.pop((namespace, name), None)

    def relist(self, kind: str, owners: Iterable[Mapping[str, Any]], list_version: str) -> None:
        """Refreshes one kind's runs from a fresh list (see `relist_jobs`)."""
        fresh = [trim(body) for body in owners]
        with self._lock:
            _forget_unlisted(self._owners, {owner_key(b) for b in fresh}, list_version, kind)
            for key in [key for key in self._refs if key not in self._owners]:
                del self._refs[key]
        for body in fresh:
            self.put_owner(body)

    def relist_jobs(self, jobs: Iterable[Mapping[str, Any]], list_version: str) -> None:
        """Refreshes the Jobs from a fresh list: entries the list no longer has are forgotten (a
        DELETED event that was missed) unless an event made them newer than the list."""
        fresh = list(jobs)
        keys = {(j["metadata"]["namespace"], j["metadata"]["name"]) for j in fresh}
        with self._lock:
            _forget_unlisted(self._jobs, keys, list_version)
        for job in fresh:
            self.put_job(job)


def _forget_unlisted(
    entries: dict[Any, tuple[int | None, Any]], listed: set[Any], list_version: str, kind: str | None = None
) -> None:
    at = int(list_version) if list_version.isdigit() else None
    for key, (version, _) in list(entries.items()):
        seen_after_list = version is not None and at is not None and version > at
        if key not in listed and not seen_after_list and (kind is None or key[0] == kind):
            del entries[key]
