"""metav1.Condition lists: setting one condition, and the standard set of a run-to-completion
resource (SyntheticDataRun, TuningJob) derived from its one-word state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from labtune.api.base import RunState

RUN_CONDITIONS = ("Ready", "Waiting", "Running", "Suspended", "Succeeded", "Failed")
# kstatus "abnormal-true" conditions: present (True) only while they hold.
RECONCILING, STALLED = "Reconciling", "Stalled"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Iterable[Mapping[str, Any]], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == "True"


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    timestamp: str,
) -> list[dict[str, Any]]:
    """Returns the list with one condition set; lastTransitionTime moves only when status changes."""
    value = "True" if status else "False"
    old = find(conditions, type_)
    changed = old is None or old.get("status") != value
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": timestamp if changed or old is None else old["lastTransitionTime"],
        "observedGeneration": generation,
    }
    return [c for c in conditions if c.get("type") != type_] + [condition]


def drop(conditions: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [c for c in conditions if c.get("type") != type_]


@dataclass(frozen=True)
class RunOutcome:
    """Where a run stands: its state, why, and whether it is stuck until someone acts."""

    state: RunState
    reason: str
    message: str = ""
    suspended: bool = False
    stalled: bool = False


def run_conditions(
    existing: list[dict[str, Any]], outcome: RunOutcome, generation: int, timestamp: str
) -> list[dict[str, Any]]:
    """The full condition list of a run: Ready (True once succeeded) and one condition per state,
    each True only in its state, plus kstatus Reconciling/Stalled."""
    holds = {
        "Ready": outcome.state == "Succeeded",
        "Waiting": outcome.state == "Waiting",
        "Running": outcome.state == "Running",
        "Suspended": outcome.suspended,
        "Succeeded": outcome.state == "Succeeded",
        "Failed": outcome.state == "Failed",
    }
    managed = (*RUN_CONDITIONS, RECONCILING, STALLED)
    previous = {c["type"]: c for c in existing if c.get("type") in managed}
    conditions = [c for c in existing if c.get("type") not in managed]

    def put(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        carried = [previous[type_]] if type_ in previous else []
        conditions = set_condition(
            conditions + carried, type_, status, reason, message, generation, timestamp
        )

    for type_ in RUN_CONDITIONS:
        own = holds[type_] or type_ == "Ready"  # Ready always explains the state
        put(type_, holds[type_], outcome.reason if own else outcome.state, outcome.message if own else "")
    if outcome.stalled or outcome.state == "Failed":
        put(STALLED, True, outcome.reason, outcome.message)
    elif outcome.state != "Succeeded":
        put(RECONCILING, True, outcome.reason, outcome.message)
    return conditions
