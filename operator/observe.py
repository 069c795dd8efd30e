"""What a child Job and its pods say: running, suspended, finished, why it failed, and the
summary the pod wrote to its termination log. Pure functions over API objects (dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labtune.operator.podspec import MAIN_CONTAINER

_MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class JobView:
    """The observed state of one child Job."""

    name: str
    suspended: bool
    active: int
    ready: int
    failed_pods: int
    complete: bool
    failed: bool
    reason: str = ""
    message: str = ""
    start_time: str | None = None
    completion_time: str | None = None


def _condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    conditions = job.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_ and c.get("status") == "True"), None)


def view_job(job: Mapping[str, Any]) -> JobView:
    status = job.get("status") or {}
    failed = _condition(job, "Failed")
    return JobView(
        name=job["metadata"]["name"],
        suspended=_condition(job, "Suspended") is not None or bool(job["spec"].get("suspend")),
        active=status.get("active", 0),
        ready=status.get("ready", 0),
        failed_pods=status.get("failed", 0),
        complete=_condition(job, "Complete") is not None,
        failed=failed is not None,
        reason=(failed or {}).get("reason", ""),
        message=(failed or {}).get("message", ""),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
    )


def _main_terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == MAIN_CONTAINER:
            terminated: Mapping[str, Any] | None = (container.get("state") or {}).get("terminated")
            return terminated
    return None


def termination_message(pods: Sequence[Mapping[str, Any]], phase: str) -> str | None:
    """The main container's termination message of the newest pod in the given phase."""
    candidates = [p for p in pods if (p.get("status") or {}).get("phase") == phase]
    candidates.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(candidates):
        terminated = _main_terminated(pod)
        if terminated and terminated.get("message"):
            message: str = terminated["message"]
            return message
    return None


def failure_detail(pods: Sequence[Mapping[str, Any]]) -> str:
    """One line from the last failed pod: its exit code and the last line it reported."""
    candidates = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    candidates.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(candidates):
        terminated = _main_terminated(pod)
        if terminated:
            lines = [line for line in (terminated.get("message") or "").splitlines() if line.strip()]
            last = lines[-1].strip() if lines else terminated.get("reason", "")
            return f"exit code {terminated.get('exitCode')}: {last}"[:_MESSAGE_LIMIT]
    return ""


def running_pods(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods whose metrics can be read: running, with an IP."""
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running" and p["status"].get("podIP")]
