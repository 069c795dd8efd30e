"""What a child Job and its pods say: running, suspended, finished, why it failed, and the
summary the pod wrote to its termination log. Pure functions over API objects (dicts)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labtune.operator.children.child_names import KUEUE_QUEUE
from labtune.operator.children.pod_template import MAIN_CONTAINER

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
    finishing: bool = False
    """Its pods are done (SuccessCriteriaMet, FailureTarget, or none active after a success) but the
    Job controller has not written Complete or Failed yet: it waits for the pods to terminate."""
    reason: str = ""
    message: str = ""
    start_time: datetime | None = None
    completion_time: datetime | None = None
    uid: str = ""
    queue: str | None = None
    """The Kueue LocalQueue named by its label: Kueue, not the operator, then decides `suspend`."""


def _condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    conditions = job.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_ and c.get("status") == "True"), None)


def view_job(job: Mapping[str, Any]) -> JobView:
    status = job.get("status") or {}
    failed = _condition(job, "Failed")
    done = _condition(job, "SuccessCriteriaMet") or _condition(job, "FailureTarget")
    active = status.get("active", 0)
    return JobView(
        name=job["metadata"]["name"],
        suspended=_condition(job, "Suspended") is not None or bool(job["spec"].get("suspend")),
        active=active,
        ready=status.get("ready", 0),
        failed_pods=status.get("failed", 0),
        complete=_condition(job, "Complete") is not None,
        failed=failed is not None,
        finishing=done is not None or (not active and status.get("succeeded", 0) > 0),
        reason=(failed or {}).get("reason", ""),
        message=(failed or {}).get("message", ""),
        start_time=_time(status.get("startTime")),
        completion_time=_time(status.get("completionTime")),
        uid=job["metadata"].get("uid", ""),
        queue=(job["metadata"].get("labels") or {}).get(KUEUE_QUEUE),
    )


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


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
            reason = terminated.get("reason", "")
            last = lines[-1].strip() if lines else reason
            # kubelet's own reasons (OOMKilled, DeadlineExceeded, ...) say more than the exit code.
            code = f"exit code {terminated.get('exitCode')}"
            if reason not in ("", "Error", "Completed") and lines:
                code += f" ({reason})"
            return f"{code}: {last}"[:_MESSAGE_LIMIT]
    return ""


# Waiting reasons (kubelet's names) of a container that will not start until someone acts: a missing or
# unpullable image, a missing Secret/ConfigMap key, a runtime error, a container restarting in a loop.
_STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)


# How kubelet and the scheduler say that an object a pod needs does not exist (in a waiting message, an
# Unschedulable condition, a FailedMount Event): the reason names its kind, the message the object.
_MISSING_OBJECT = (
    (re.compile(r'\bsecret "[^"]+" not found'), "SecretNotFound"),
    (re.compile(r'\bconfigmaps? "[^"]+" not found'), "ConfigMapNotFound"),
    (re.compile(r'\bpersistentvolumeclaims? "[^"]+" not found'), "ClaimNotFound"),
)


def _named(reason: str, text: str) -> str:
    """A more precise reason than kubelet's when `text` says a Secret, ConfigMap or claim is missing."""
    return next((named for pattern, named in _MISSING_OBJECT if pattern.search(text)), reason)


def start_problem(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """Why a pod of a starting Job does not run (reason, one line naming pod and container), from the
    container statuses kubelet reports or the scheduler's Unschedulable; None while it is just starting."""
    for pod in pods:
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        for container in containers:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _STUCK_REASONS:
                detail = waiting.get("message") or waiting["reason"]
                line = f"pod {name}: container {container.get('name')}: {waiting['reason']}: {detail}"
                return _named(waiting["reason"], detail), line[:_MESSAGE_LIMIT]
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                message = condition.get("message", "")
                return _named("Unschedulable", message), f"pod {name}: {message}"[:_MESSAGE_LIMIT]
    return None


def pending_pods(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the pods kubelet has not started yet (whose volume Events may say why)."""
    return [p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") == "Pending"]


def mount_problem(events: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """Why kubelet cannot set up a pod's volumes (reason, one line naming the pod), from the newest
    FailedMount Event of the pods' Events; None when there is none."""
    failed = [e for e in events if e.get("type") == "Warning" and e.get("reason") == "FailedMount"]
    if not failed:
        return None
    newest = max(failed, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    message = newest.get("message", "")
    line = f"pod {(newest.get('involvedObject') or {}).get('name')}: {message}"
    return _named("FailedMount", message), line[:_MESSAGE_LIMIT]


def running_pods(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods whose metrics can be read: running, with an IP."""
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running" and p["status"].get("podIP")]


@dataclass(frozen=True)
class Refusal:
    """A child cannot be had (the API server refused it, or its name is taken): why, and whether
    asking again can help before someone changes something (a quota frees up by itself; an
    invalid object does not)."""

    reason: str
    message: str
    lasting: bool


def refusal(child: Mapping[str, Any], status: int, body: str | None) -> Refusal | None:
    """What a failed create of a child means for its owner: 400/422 the object is invalid, 403 a
    quota, an admission policy or the operator's RBAC said no; None for anything else (the
    connection, a conflict, a server error: retried like every API failure)."""
    kind, name = child["kind"], child["metadata"]["name"]
    try:
        said = str(json.loads(body or "{}").get("message") or "")
    except ValueError:
        said = (body or "").strip()
    message = f"the API server refused to create {kind} {name}: {said or f'HTTP {status}'}"[:_MESSAGE_LIMIT]
    if status in (400, 422):
        return Refusal(f"{kind}Invalid", message, lasting=True)
    if status == 403:
        if "exceeded quota" in said:
            return Refusal("QuotaExceeded", message, lasting=False)
        return Refusal(f"{kind}Forbidden", message, lasting=True)
    return None


def not_ours(child: Mapping[str, Any], found: Mapping[str, Any]) -> Refusal | None:
    """A child of that name exists but another object controls it (made by hand, or by another
    resource): it is never adopted, so two owners cannot share one Job."""
    ours = child["metadata"]["ownerReferences"][0]
    owners = found["metadata"].get("ownerReferences") or []
    if any(o.get("uid") == ours["uid"] for o in owners):
        return None
    kind, name = child["kind"], child["metadata"]["name"]
    if any((o.get("kind"), o.get("name")) == (ours["kind"], ours["name"]) for o in owners):
        # The resource was deleted and made again: garbage collection removes the old child soon.
        message = f"{kind} {name} of an earlier {ours['kind']} of this name is still being deleted"
        return Refusal(f"{kind}NameTaken", message, lasting=False)
    holder = next((f"{o['kind']} {o['name']}" for o in owners if o.get("controller")), "no owner")
    message = f"{kind} {name} exists and belongs to {holder}, not to this resource; delete or rename it"
    return Refusal(f"{kind}NameTaken", message, lasting=True)
