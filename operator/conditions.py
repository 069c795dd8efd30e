"""metav1.Condition lists: setting one condition, and the standard set of a run-to-completion
resource (SyntheticDataRun, TuningJob) derived from its one-word state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from labtune.api.base import Condition, RunState

RUN_CONDITIONS = ("Ready", "Waiting", "Running", "Suspended", "Succeeded", "Failed")
# kstatus "abnormal-true" conditions: present (True) only while they hold.
RECONCILING, STALLED = "Reconciling", "Stalled"


def now() -> datetime:
    """The time a reconciliation stamps on what it writes: whole seconds, as metav1.Time has."""
    return datetime.now(UTC).replace(microsecond=0)


def find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Iterable[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == "True"


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    timestamp: datetime,
) -> list[Condition]:
    """Returns the list with one condition set; lastTransitionTime moves only when status changes."""
    value = "True" if status else "False"
    old = find(conditions, type_)
    condition = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=old.last_transition_time if old and old.status == value else timestamp,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type_] + [condition]


def drop(conditions: list[Condition], type_: str) -> list[Condition]:
    return [c for c in conditions if c.type != type_]


@dataclass(frozen=True)
class RunOutcome:
    """Where a run stands: its state, why, and whether it is stuck until someone acts."""

    state: RunState
    reason: str
    message: str = ""
    suspended: bool = False
    stalled: bool = False


def run_conditions(
    existing: list[Condition], outcome: RunOutcome, generation: int, timestamp: datetime
) -> list[Condition]:
    """The full condition list of a run: Ready (True once succeeded) and one condition per state,
    each True only in its state, plus kstatus Reconciling/Stalled."""
    holds = {
        "Ready": outcome.state == "Succeeded",
        "Waiting": outcome.state in ("Waiting", "Queued"),  # Queued: for Kueue to admit its Job
        "Running": outcome.state == "Running",
        "Suspended": outcome.suspended,
        "Succeeded": outcome.state == "Succeeded",
        "Failed": outcome.state == "Failed",
    }
    managed = (*RUN_CONDITIONS, RECONCILING, STALLED)
    previous = {c.type: c for c in existing if c.type in managed}
    conditions = [c for c in existing if c.type not in managed]

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
