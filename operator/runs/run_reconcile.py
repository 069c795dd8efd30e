"""The reconcile loop shared by the run-to-completion kinds (SyntheticDataRun, TuningJob).

Level-triggered: every call looks at the resource, its dependency and its child Job (as the watches
last showed them, see `store`), and writes the status that follows from them. Calling it twice in a
row changes nothing the second time; children have deterministic names, so a restarted operator
adopts what it made before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from labtune.api.base import MANAGED_BY_LABTUNE, RunStatusBase, StatusBase
from labtune.api.resource import Resource
from labtune.contract.common import validation_problems
from labtune.operator import conditions as cond
from labtune.operator.children.child_names import selector
from labtune.operator.children.job_observe import (
    JobView,
    Refusal,
    failure_detail,
    mount_problem,
    not_ours,
    pending_pods,
    refusal,
    start_problem,
    termination_message,
)
from labtune.operator.children.pod_metrics import Samples
from labtune.operator.conditions import RunOutcome
from labtune.operator.machinery.api_client import Kube
from labtune.operator.machinery.watch_store import Store
from labtune.operator.settings import OperatorSettings

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@dataclass(frozen=True)
class Waiting:
    """The run cannot start yet (or at all, when stalled): a dependency is missing or not ready."""

    reason: str
    message: str
    stalled: bool = False


@dataclass(frozen=True)
class CannotRun:
    """The run can never start (what it depends on failed for good): it fails with this reason."""

    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """The children a run needs (the Job last) and status fields fixed when it starts."""

    job_name: str
    children: tuple[Mapping[str, Any], ...]
    pinned: RunStatusBase = field(default_factory=RunStatusBase)
    """Status fields fixed at the start (the fields it sets), in the kind's status model."""


@dataclass(frozen=True)
class KindCondition:
    """A condition of the kind's own beside the run conditions (a TuningJob's Evaluated)."""

    type: str
    status: bool
    reason: str
    message: str


def status_patch(status: StatusBase) -> dict[str, Any]:
    """A status model as the merge patch of the fields it sets: camelCase from the model, and an
    explicit None (a value the run no longer has) kept as null so that the patch removes it."""
    return status.model_dump(mode="json", by_alias=True, exclude_unset=True)


S = TypeVar("S", bound=StatusBase)


def merge(into: S, part: StatusBase) -> S:
    """`into` with every field `part` sets (both the kind's status model, or part its base)."""
    for name in part.model_fields_set:
        setattr(into, name, getattr(part, name))
    return into


def unchanged(old: StatusBase, new: StatusBase) -> bool:
    """Whether writing `new` (the fields it sets) would change nothing in `old`. Compared as models,
    not as wire dicts, so that a field the API returns in another spelling (12 for 12.0, a default
    left out) does not count as a change."""
    return all(getattr(old, name) == getattr(new, name) for name in new.model_fields_set)


@dataclass(frozen=True)
class Finished:
    """What a completed Job's summary says about its run."""

    status: RunStatusBase
    """Status fields from the summary (those it sets), in the kind's status model."""
    note: str = ""
    """What a person should know beyond the completion, appended to its message ('' if nothing)."""
    failure: tuple[str, str] | None = None
    """(reason, message) when the run finished but its result is not one (a failed gate)."""
    conditions: tuple[KindCondition, ...] = ()


class RunKind(Protocol):
    """What a run kind contributes to the shared loop."""

    resource: type[Resource]
    status_model: type[RunStatusBase]
    every_pod_reports: bool
    """Each pod of a Job reports its own part of the run (a sharded run's shards, summed; a finished
    pod by its summary's `summary_metrics`), rather than pod 0 for the whole run."""
    summary_metrics: Mapping[str, str]
    """A pod summary's fields (camelCase) by the metric each stands for once the pod finished."""

    def plan(
        self, kube: Kube, body: Mapping[str, Any], settings: OperatorSettings
    ) -> Plan | Waiting | CannotRun: ...

    def next_step(
        self, kube: Kube, body: Mapping[str, Any], settings: OperatorSettings, finished_job: str
    ) -> Plan | Waiting | None:
        """The step that follows the Job that succeeded (a sharded run's mix), why it cannot
        start, or None when the run ends with that Job."""
        ...

    def finished(self, summary: str) -> Finished:
        """The run's end from the pod's termination summary; ValueError when it is not valid."""
        ...

    def gpus(self, spec: Mapping[str, Any]) -> int:
        """GPUs the run's pods hold together, for GPU-seconds accounting."""
        ...

    def progress(self, samples: Sequence[Samples]) -> RunStatusBase | None:
        """Status fields from the pods' metrics, pod 0 first (None: they say nothing yet)."""
        ...


@dataclass(frozen=True)
class Transition:
    """A change of state worth an Event (and a metric)."""

    old_state: str | None
    outcome: RunOutcome
    duration_s: float | None = None
    gpu_seconds: float = 0.0


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def why_pods_wait(kube: Kube, namespace: str, pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Why a Job's pods do not start (reason, message): their statuses say, else their Events (a
    Secret or ConfigMap volume that does not exist shows only as kubelet's FailedMount)."""
    if problem := start_problem(pods):
        return problem
    return mount_problem([e for pod in pending_pods(pods) for e in kube.list_events(namespace, "Pod", pod)])


def _job_outcome(
    view: JobView, pods: list[dict[str, Any]], want_suspend: bool, problem: tuple[str, str] | None
) -> RunOutcome:
    if view.failed:
        detail = failure_detail(pods)
        message = f"{view.message} ({detail})" if detail else view.message
        return RunOutcome("Failed", view.reason or "JobFailed", message)
    if want_suspend:
        return RunOutcome("Suspended", "Suspended", f"Job {view.name} is suspended", suspended=True)
    if view.finishing:
        # Between the pods' end and the Job's Complete: the run is still running, not starting again.
        return RunOutcome("Running", "JobRunning", f"Job {view.name}: its pods finished; completing")
    if view.ready:
        return RunOutcome(
            "Running", "JobRunning", f"Job {view.name}: {view.ready} of {view.active} pod(s) running"
        )
    if view.active:
        if problem:
            return RunOutcome("Pending", *problem)
        return RunOutcome("Pending", "PodsStarting", f"Job {view.name}: {view.active} pod(s) starting")
    return RunOutcome("Pending", "JobCreated", f"Job {view.name} is waiting for its pods to start")


def follow_suspend(
    kube: Kube, namespace: str, view: JobView, workload: Mapping[str, Any] | None, suspend: bool
) -> None:
    """Suspends or resumes the Job as the spec says. A Job of a Kueue LocalQueue is Kueue's to
    (un)suspend: its Workload is deactivated instead (Kueue then evicts and suspends the Job), and
    reactivated on resume; until Kueue made its Workload, there is nothing to resume."""
    if view.queue is None:
        if view.suspended != suspend:
            kube.set_job_suspend(namespace, view.name, suspend)
        return
    if workload is None:
        if suspend and not view.suspended:
            kube.set_job_suspend(namespace, view.name, True)
        return
    if (workload.get("spec") or {}).get("active", True) == suspend:
        kube.set_workload_active(namespace, workload["metadata"]["name"], not suspend)


def queued_outcome(view: JobView, workload: Mapping[str, Any] | None) -> RunOutcome:
    """A Job Kueue has not admitted: Kueue's own reason and message from its Workload."""
    if workload is None:
        return RunOutcome(
            "Queued",
            "WaitingForKueue",
            f"Job {view.name} waits for Kueue to admit it to LocalQueue {view.queue}, and Kueue has made "
            "no Workload for it yet (is Kueue installed, and does the LocalQueue exist?)",
        )
    conditions = (workload.get("status") or {}).get("conditions") or []
    reserved = next((c for c in conditions if c.get("type") == "QuotaReserved"), None)
    if reserved is None:
        return RunOutcome("Queued", "Queued", f"Job {view.name} is queued in LocalQueue {view.queue}")
    reason = reserved.get("reason") or "Pending"
    return RunOutcome(
        "Queued", reason, f"Kueue has not admitted Job {view.name}: {reserved.get('message') or reason}"
    )


def create_children(kube: Kube, children: tuple[Mapping[str, Any], ...]) -> dict[str, Any] | Refusal:
    """Creates (or adopts) each child in order and returns the last, or why one cannot be had — a
    condition on the owner, never only an operator log line."""
    made: dict[str, Any] = {}
    for child in children:
        try:
            made, created = kube.ensure(child)
        except ApiException as error:
            refused = refusal(child, error.status or 0, error.body)
            if refused is None:
                raise
            return refused
        if not created and (taken := not_ours(child, made)):
            return taken
    return made


def _failed(pods: list[dict[str, Any]]) -> int:
    return sum(1 for pod in pods if (pod.get("status") or {}).get("phase") == "Failed")


class StaleBody(Exception):
    """The body in hand is too old to decide on (read the resource again and reconcile anew)."""


def _find_job(kube: Kube, store: Store, namespace: str, name: str) -> JobView | None:
    """The Job as the watch last showed it, or as the API has it when the watch has not shown it
    yet (a Job created a moment ago); None when it does not exist."""
    view = store.job(namespace, name)
    if view is not None:
        return view
    job = kube.get_job(namespace, name)
    return store.put_job(job) if job is not None else None


def reconcile_run(
    kube: Kube,
    store: Store,
    body: Mapping[str, Any],
    kind: RunKind,
    settings: OperatorSettings,
    timestamp: datetime,
    *,
    fresh: bool,
) -> Transition | None:
    """Brings one run's children and status in line with what exists; returns the transition
    when the state changed. `fresh`: the body was just read from the API (not from a watch)."""
    meta, spec = body["metadata"], body["spec"]
    if spec.get("managedBy", MANAGED_BY_LABTUNE) != MANAGED_BY_LABTUNE:
        return None  # another controller runs it (MultiKueue's manager copy): not a status write
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 0)
    old = kind.status_model.model_validate(body.get("status") or {})
    if old.completion_time:
        # Finished runs are final (their children may already be gone: TTL), but a spec change since
        # (suspend, or any field of a run that failed before it started) is acknowledged: kstatus and
        # GitOps tools take a generation the status has not observed for a run still in progress.
        if old.observed_generation != generation:
            seen = status_patch(kind.status_model(observed_generation=generation))
            store.put_owner(
                kube.patch_status(kind.resource, namespace, name, seen, meta.get("resourceVersion"))
            )
        return None

    status = kind.status_model(observed_generation=generation)
    view = _find_job(kube, store, namespace, old.job_name) if old.job_name else None
    if view is None:
        if old.job_name and not fresh:
            # The Job the status names is gone: it is recreated only for a run that is still
            # unfinished as the API has it now, never from a body that may predate its completion.
            raise StaleBody()
        plan = kind.plan(kube, body, settings)
        if isinstance(plan, Waiting):
            outcome = RunOutcome("Waiting", plan.reason, plan.message, stalled=plan.stalled)
            return _write(kube, store, kind, body, old, status, outcome, timestamp)
        if isinstance(plan, CannotRun):
            status.completion_time = timestamp
            outcome = RunOutcome("Failed", plan.reason, plan.message)
            return _write(kube, store, kind, body, old, status, outcome, timestamp)
        made = create_children(kube, plan.children)
        if isinstance(made, Refusal):
            outcome = RunOutcome("Waiting", made.reason, made.message, stalled=made.lasting)
            return _write(kube, store, kind, body, old, status, outcome, timestamp)
        view = store.put_job(made)
        if old.job_name and old.start_time:
            status.restarts = old.restarts + 1  # the Job was deleted under a started run
        merge(status, plan.pinned)
        status.job_name = plan.job_name
        status.start_time = old.start_time or timestamp

    if view.complete:
        step = kind.next_step(kube, body, settings, view.name)
        if isinstance(step, Waiting):
            outcome = RunOutcome("Waiting", step.reason, step.message, stalled=step.stalled)
            return _write(kube, store, kind, body, old, status, outcome, timestamp)
        if step is not None:
            # The finished step's replaced pods stay the run's restarts once its Job is left behind.
            done = kube.list_pods(namespace, {**selector(body["kind"], name), JOB_NAME_LABEL: view.name})
            status.restarts = max(old.restarts, view.failed_pods, _failed(done))
            made = create_children(kube, step.children)
            if isinstance(made, Refusal):
                outcome = RunOutcome("Waiting", made.reason, made.message, stalled=made.lasting)
                return _write(kube, store, kind, body, old, status, outcome, timestamp)
            view = store.put_job(made)
            status.job_name = step.job_name

    want_suspend = bool(spec.get("suspend"))
    workload = kube.job_workload(namespace, view.uid) if view.queue and view.uid else None
    if not (view.complete or view.failed):
        follow_suspend(kube, namespace, view, workload, want_suspend)
    # Pods matter only for a finished Job (its summary, or why it failed) and for one whose pods do not
    # run yet (why not: an image that cannot be pulled, a pod that cannot be scheduled, ...): a running
    # one is described by the Job's own status, and progress comes from the scrape timer.
    finished = view.complete or view.failed
    starting = bool(view.active) and not view.ready and not finished
    pods = (
        kube.list_pods(namespace, {**selector(body["kind"], name), JOB_NAME_LABEL: view.name})
        if finished or starting
        else []
    )
    # Pods the pod failure policy ignored (preempted after a checkpoint, exit 75) count as restarts too,
    # though the Job's own `failed` leaves them out; their pod objects stay until the Job goes.
    status.restarts = max(status.restarts, old.restarts, view.failed_pods, _failed(pods))

    extra: tuple[KindCondition, ...] = ()
    if view.complete:
        try:
            end = kind.finished(termination_message(pods, "Succeeded") or "")
        except ValueError as error:
            # One line, as every condition message: pydantic's own text spans several.
            invalid = validation_problems(error) if isinstance(error, ValidationError) else str(error)
            outcome = RunOutcome(
                "Failed", "InvalidSummary", f"the pod succeeded without a valid summary: {invalid}"
            )
        else:
            restarts = status.restarts
            merge(status, end.status)
            status.restarts = max(restarts, status.restarts)
            extra = end.conditions
            if end.failure:
                outcome = RunOutcome("Failed", *end.failure)
            else:
                outcome = RunOutcome("Succeeded", "Succeeded", f"Job {view.name} completed{end.note}")
        status.completion_time = view.completion_time or timestamp
    elif view.queue and view.suspended and not want_suspend and not view.failed:
        outcome = queued_outcome(view, workload)
    else:
        problem = why_pods_wait(kube, namespace, pods) if starting else None
        outcome = _job_outcome(view, pods, want_suspend, problem)
        if outcome.state == "Failed":
            status.completion_time = timestamp
    return _write(kube, store, kind, body, old, status, outcome, timestamp, view, extra)


def _write(
    kube: Kube,
    store: Store,
    kind: RunKind,
    body: Mapping[str, Any],
    old: RunStatusBase,
    status: RunStatusBase,
    outcome: RunOutcome,
    timestamp: datetime,
    view: JobView | None = None,
    extra: tuple[KindCondition, ...] = (),
) -> Transition | None:
    meta = body["metadata"]
    generation = meta.get("generation", 0)
    status.state = outcome.state
    conditions = cond.run_conditions(old.conditions, outcome, generation, timestamp)
    for c in extra:
        conditions = cond.set_condition(
            conditions, c.type, c.status, c.reason, c.message, generation, timestamp
        )
    status.conditions = conditions
    duration = _seconds_between(view.start_time if view else None, status.completion_time)
    gpu_seconds = (duration or 0.0) * kind.gpus(body["spec"])
    if status.completion_time:
        status.gpu_seconds = round(gpu_seconds, 1)
    if unchanged(old, status):
        return None  # nothing changed: no write, no event
    # The resourceVersion makes a write from a stale body fail with 409 instead of overwriting a
    # newer status; the caller reads the resource again and reconciles anew.
    written = kube.patch_status(
        kind.resource, meta["namespace"], meta["name"], status_patch(status), meta.get("resourceVersion")
    )
    store.put_owner(written)
    old_ready = cond.find(old.conditions, "Ready")
    if old.state == outcome.state and old_ready is not None and old_ready.reason == outcome.reason:
        return None
    return Transition(old.state, outcome, duration, gpu_seconds)
