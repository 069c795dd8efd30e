"""An in-memory stand-in for the operator's API client (machinery.api_client.Kube), for unit tests
of the reconcile loop: objects in dicts, resourceVersions that increase, 409 on a stale status write
and on creating an existing child — the API server's behaviour the loop relies on."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from labtune.api.resource import Resource
from labtune.operator.children.child_names import MANAGED_BY, kind_label
from labtune.operator.runs.run_reconcile import JOB_NAME_LABEL

Key = tuple[str, str, str]
EPOCH = datetime(2026, 12, 3, tzinfo=UTC)


def _stamp(seconds: int) -> str:
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.versions = itertools.count(100)
        self.writes: list[tuple[str, str]] = []  # (verb, kind)
        self.conflicts_to_inject = 0
        self.clock = itertools.count()  # seconds after the fake's epoch, one per new object

    def put(self, body: Mapping[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(dict(body))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", _stamp(next(self.clock)))
        meta["resourceVersion"] = str(next(self.versions))
        self.objects[(stored["kind"], meta["namespace"], meta["name"])] = stored
        return copy.deepcopy(stored)

    def put_job_pod(self, kind: str, owner: str, job: str, exit_code: int, message: str) -> None:
        """The terminated pod of a child Job, as the kubelet leaves it: its main container's exit
        code and termination message (the summary)."""
        labels = {MANAGED_BY: "labtune", kind_label(kind): owner, JOB_NAME_LABEL: job}
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
        self.put(
            {
                "kind": "Pod",
                "metadata": {"name": f"{job}-pod", "namespace": "ns", "labels": labels},
                "status": {
                    "phase": "Succeeded" if exit_code == 0 else "Failed",
                    "containerStatuses": [
                        {"name": "main", "state": {"terminated": {**terminated, "message": message}}}
                    ],
                },
            }
        )

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    # --- the Kube methods the loop calls -----------------------------------------------------

    def get_resource(self, kind: type[Resource], namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(kind.kind_name(), namespace, name)

    def patch_status(
        self,
        kind: type[Resource],
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        stored = self.objects[(kind.kind_name(), namespace, name)]
        if self.conflicts_to_inject or (
            resource_version and resource_version != stored["metadata"]["resourceVersion"]
        ):
            self.conflicts_to_inject = max(0, self.conflicts_to_inject - 1)
            raise ApiException(status=409, reason="Conflict")
        merged = {**(stored.get("status") or {}), **copy.deepcopy(dict(status))}
        self.writes.append(("patch status", kind.kind_name()))
        return self.put({**stored, "status": {k: v for k, v in merged.items() if v is not None}})

    def ensure(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        meta = body["metadata"]
        found = self.get(body["kind"], meta["namespace"], meta["name"])
        if found is not None:
            return found, False
        self.writes.append(("create", body["kind"]))
        return self.put(body), True

    def list_resources_in(
        self, kind: type[Resource], namespace: str, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        return self._list(kind.kind_name(), namespace, selector)

    def delete_resource(self, kind: type[Resource], namespace: str, name: str) -> None:
        self.writes.append(("delete", kind.kind_name()))
        self.objects.pop((kind.kind_name(), namespace, name), None)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("Job", namespace, name)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        del self.objects[(kind, namespace, name)]

    def _list(self, kind_name: str, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (kind, ns, _), o in self.objects.items()
            if kind == kind_name
            and ns == namespace
            and selector.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def job_workload(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        owned = [
            copy.deepcopy(o)
            for (kind, ns, _), o in self.objects.items()
            if kind == "Workload"
            and ns == namespace
            and any(r.get("uid") == job_uid for r in o["metadata"].get("ownerReferences") or [])
        ]
        return owned[0] if owned else None

    def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        workload = self.objects[("Workload", namespace, name)]
        workload.setdefault("spec", {})["active"] = active
        self.writes.append(("patch", "Workload"))
        self.put(workload)

    def list_pods(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        return self._list("Pod", namespace, selector)

    def list_jobs(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        return self._list("Job", namespace, selector)

    def list_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        return []

    def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        job = self.objects[("Job", namespace, name)]
        job["spec"]["suspend"] = suspend
        self.put(job)
