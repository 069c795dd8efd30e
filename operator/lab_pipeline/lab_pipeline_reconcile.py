"""A LabPipeline's reconciliation, level-triggered: from its Taxonomy's newest Ready revision and
the runs it stamped (listed by label), stamp the run a new leaves digest calls for (or queue, skip,
or replace by the concurrency policy), delete the runs past the history limit, and report the
latest model in status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from labtune.api import LabPipeline, SyntheticDataRun, Taxonomy, TuningJob
from labtune.api.base import Condition
from labtune.api.lab_pipeline_types import LabPipelineStatus, PipelineResult, StampedRun
from labtune.api.taxonomy_types import TaxonomyStatus
from labtune.api.tuning_job_types import TuningJobStatus
from labtune.operator import conditions as cond
from labtune.operator import operator_metrics as metrics
from labtune.operator.children.child_names import selector
from labtune.operator.conditions import now
from labtune.operator.lab_pipeline.lab_pipeline_builders import (
    LEAVES_DIGEST,
    REVISION,
    build_runs,
    run_name,
)
from labtune.operator.machinery.api_client import Kube
from labtune.operator.machinery.context import Context
from labtune.operator.machinery.retries import Gone, reconciliation
from labtune.operator.runs.run_reconcile import status_patch, unchanged

Event = tuple[str, str, str]
"""(type, reason, message) of an Event to record."""


@dataclass(frozen=True)
class _Run:
    """A stamped run as its resources say."""

    record: StampedRun
    tuning: TuningJobStatus | None
    resources: tuple[tuple[type[SyntheticDataRun] | type[TuningJob], str], ...]


def _state(body: Mapping[str, Any] | None) -> str | None:
    return ((body or {}).get("status") or {}).get("state")


def _stamped(kube: Kube, namespace: str, pipeline: str, generates_only: bool) -> list[_Run]:
    """The pipeline's runs, oldest first, each from its SyntheticDataRun and TuningJob."""
    labels = selector("LabPipeline", pipeline)
    data = {b["metadata"]["name"]: b for b in kube.list_resources_in(SyntheticDataRun, namespace, labels)}
    tuning = {b["metadata"]["name"]: b for b in kube.list_resources_in(TuningJob, namespace, labels)}
    runs = []
    for name, body in sorted(
        data.items(), key=lambda item: (item[1]["metadata"].get("creationTimestamp") or "", item[0])
    ):
        annotations = body["metadata"].get("annotations") or {}
        if REVISION not in annotations or LEAVES_DIGEST not in annotations:
            continue  # labelled by hand, not stamped: not the pipeline's to judge or delete
        job = tuning.get(name)
        last = _state(body) if generates_only or _state(body) == "Failed" else _state(job)
        state = last if last in ("Succeeded", "Failed") else "Running"
        record = StampedRun(
            name=name,
            revision=annotations[REVISION],
            leaves_digest=annotations[LEAVES_DIGEST],
            state=state,
        )
        resources: list[tuple[type[SyntheticDataRun] | type[TuningJob], str]] = [(SyntheticDataRun, name)]
        if job is not None:
            resources.append((TuningJob, name))
        status = TuningJobStatus.model_validate(job.get("status") or {}) if job else None
        runs.append(_Run(record, status, tuple(resources)))
    return runs


def _result(run: _Run) -> PipelineResult:
    tuning = run.tuning
    gate = tuning.evaluation.gate if tuning and tuning.evaluation else None
    result = PipelineResult(name=run.record.name, revision=run.record.revision)
    if tuning and tuning.output:
        result.output = tuning.output
    if gate:
        result.gate_passed = gate.passed
    return result


@dataclass
class _Plan:
    """What this reconciliation does and says."""

    status: LabPipelineStatus
    events: list[Event] = field(default_factory=list)
    stamp: tuple[str, str] | None = None
    """(revision, leaves digest) to stamp a run for."""
    delete: list[_Run] = field(default_factory=list)


@dataclass(frozen=True)
class _Target:
    """The Taxonomy's newest Ready revision and leaves digest, or why there is none."""

    revision: str = ""
    digest: str = ""
    waiting: tuple[str, str] | None = None
    """(reason, message) when there is no revision to run."""


def _taxonomy_target(taxonomy: Mapping[str, Any] | None, name: str) -> _Target:
    if taxonomy is None:
        return _Target(waiting=("TaxonomyNotFound", f"Taxonomy {name} does not exist"))
    status = TaxonomyStatus.model_validate(taxonomy.get("status") or {})
    ready = cond.find(status.conditions, "Ready")
    if ready is None or ready.status != "True" or not status.revision:
        why = f": {ready.reason}: {ready.message}" if ready else ""
        return _Target(waiting=("WaitingForTaxonomy", f"Taxonomy {name} is not Ready{why}"))
    if not status.leaves_digest:
        why = f"Taxonomy {name} has no leaves digest yet (its next sync sets it)"
        return _Target(waiting=("WaitingForTaxonomy", why))
    return _Target(status.revision, status.leaves_digest)


def plan(body: Mapping[str, Any], taxonomy: Mapping[str, Any] | None, runs: list[_Run]) -> _Plan:
    """The pure decision: status, Events, the run to stamp and the runs to delete."""
    pipeline = LabPipeline.model_validate(body)
    spec, old = pipeline.spec, pipeline.status or LabPipelineStatus()
    status = LabPipelineStatus(
        observed_generation=body["metadata"].get("generation", 0),
        runs=max(old.runs, len(runs)),
        skipped_revisions=old.skipped_revisions,
        latest_succeeded=old.latest_succeeded,
        latest_gate_passed=old.latest_gate_passed,
        taxonomy_revision=old.taxonomy_revision,
        leaves_digest=old.leaves_digest,
        skipped_digest=old.skipped_digest,
    )
    result = _Plan(status)
    records = [r.record for r in runs]
    active = [r for r in runs if r.record.state == "Running"]
    status.active = active[-1].record if active else None
    status.last_run = records[-1] if records else None
    succeeded = [r for r in runs if r.record.state == "Succeeded"]
    if succeeded:
        newest = _result(succeeded[-1])
        if old.latest_succeeded is None or old.latest_succeeded.name != newest.name:
            where = f": {newest.output.adapter}" if newest.output and newest.output.adapter else ""
            result.events.append(
                ("Normal", "LatestModel", f"run {newest.name} of {newest.revision[:12]} succeeded{where}")
            )
        status.latest_succeeded = newest
    passed = [_result(r) for r in succeeded if _result(r).gate_passed]
    if passed:
        status.latest_gate_passed = passed[-1]

    target = _taxonomy_target(taxonomy, spec.taxonomy_ref.name)
    if target.waiting is not None:
        reason, message = target.waiting
        status.state = "Suspended" if spec.suspend else "Waiting" if status.active is None else "Running"
        result.delete = _past_history(runs, spec.history_limit, status)
        return _conditions(result, old.conditions, body, (False, reason, message))
    revision, digest = target.revision, target.digest
    status.taxonomy_revision, status.leaves_digest = revision, digest
    last = records[-1] if records else None
    new = last is None or last.leaves_digest != digest
    if new and status.skipped_digest == digest:
        new = False  # skipped under Forbid while a run was active
    status.queued_revision = None
    if new and spec.suspend:
        status.queued_revision = revision
    elif new and status.active is not None:
        if spec.concurrency_policy == "Queue":
            status.queued_revision = revision
        elif spec.concurrency_policy == "Replace":
            result.delete.extend(active)
            result.events.append(
                ("Normal", "Replaced", f"run {status.active.name} deleted for revision {revision[:12]}")
            )
            result.stamp = (revision, digest)
        else:
            status.skipped_digest = digest
            status.skipped_revisions += 1
            result.events.append(
                ("Normal", "Skipped", f"revision {revision[:12]} not run: {status.active.name} is active")
            )
    elif new:
        result.stamp = (revision, digest)
    if result.stamp is not None:
        status.runs += 1
        status.skipped_digest = None
        status.active = StampedRun(
            name=run_name(body["metadata"]["name"], revision),
            revision=revision,
            leaves_digest=digest,
            state="Running",
        )
        status.last_run = status.active
    result.delete.extend(
        _past_history([r for r in runs if r not in result.delete], spec.history_limit, status)
    )
    return _conditions(result, old.conditions, body, _ready(status, spec.suspend, last))


def _ready(status: LabPipelineStatus, suspend: bool, last: StampedRun | None) -> tuple[bool, str, str]:
    """Ready, its reason and message; sets status.state."""
    if status.active is not None and not suspend:
        status.state = "Running"
        queued = f"; {status.queued_revision[:12]} queued" if status.queued_revision else ""
        return (
            False,
            "Running",
            f"run {status.active.name} is running for {status.active.revision[:12]}{queued}",
        )
    if suspend:
        status.state = "Suspended"
        queued = f" ({status.queued_revision[:12]} waits)" if status.queued_revision else ""
        return False, "Suspended", f"suspended: no new run is stamped{queued}"
    if last is not None and last.state == "Failed":
        status.state = "Failed"
        return False, "RunFailed", f"run {last.name} of {last.revision[:12]} failed (see its conditions)"
    status.state = "Idle"
    latest = status.latest_succeeded
    model = f"; the latest model is from {latest.revision[:12]}" if latest else ""
    return True, "UpToDate", f"revision {(status.taxonomy_revision or '')[:12]} has run{model}"


def _past_history(runs: list[_Run], limit: int, status: LabPipelineStatus) -> list[_Run]:
    """Finished runs beyond the newest `limit`, except the ones status names as results."""
    keep = {r.name for r in (status.latest_succeeded, status.latest_gate_passed) if r}
    finished = [r for r in runs if r.record.state != "Running"]
    return [r for r in finished[: max(0, len(finished) - limit)] if r.record.name not in keep]


def _conditions(
    result: _Plan, old: list[Condition], body: Mapping[str, Any], ready: tuple[bool, str, str]
) -> _Plan:
    status, generation, timestamp = result.status, body["metadata"].get("generation", 0), now()
    ok, reason, message = ready
    conditions = cond.set_condition(list(old), "Ready", ok, reason, message, generation, timestamp)
    if status.state == "Running":
        conditions = cond.set_condition(
            conditions, cond.RECONCILING, True, reason, message, generation, timestamp
        )
    else:
        conditions = cond.drop(conditions, cond.RECONCILING)
    if status.state == "Failed":
        conditions = cond.set_condition(
            conditions, cond.STALLED, True, reason, message, generation, timestamp
        )
    else:
        conditions = cond.drop(conditions, cond.STALLED)
    status.conditions = conditions
    old_ready = cond.find(old, "Ready")
    if old_ready is None or (old_ready.status, old_ready.reason) != ("True" if ok else "False", reason):
        warning = reason in ("RunFailed", "TaxonomyNotFound")
        result.events.append(("Warning" if warning else "Normal", reason, message))
    return result


def reconcile_lab_pipeline(kube: Kube, body: Mapping[str, Any]) -> tuple[LabPipelineStatus, list[Event]]:
    """One reconciliation; returns the status written (or found current) and the Events to record."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    pipeline = LabPipeline.model_validate(body)
    taxonomy = kube.get_resource(Taxonomy, namespace, pipeline.spec.taxonomy_ref.name)
    runs = _stamped(kube, namespace, name, pipeline.spec.tuning_job_template is None)
    decided = plan(body, taxonomy, runs)
    for run in decided.delete:
        for kind, resource_name in run.resources:
            kube.delete_resource(kind, namespace, resource_name)
    if decided.stamp is not None:
        revision, digest = decided.stamp
        stamped = build_runs(body, revision, digest)
        for resource in stamped:
            kube.ensure(resource)
        name_made = stamped[0]["metadata"]["name"]
        decided.events.append(("Normal", "Stamped", f"run {name_made} for revision {revision[:12]}"))
    old = pipeline.status or LabPipelineStatus()
    if not unchanged(old, decided.status):
        kube.patch_status(LabPipeline, namespace, name, status_patch(decided.status))
    return decided.status, decided.events


def reconcile_once(context: Context, namespace: str, name: str) -> None:
    """One reconciliation from a fresh read, with its Events and state metric."""
    with reconciliation("LabPipeline"):
        body = context.kube.get_resource(LabPipeline, namespace, name)
        if body is None:
            raise Gone()
        context.store.put_owner(body)
        status, events = reconcile_lab_pipeline(context.kube, body)
        if context.recorder is not None:
            for type_, reason, message in events:
                context.recorder.record(body, type_, reason, message)
        metrics.RESOURCE_STATES.set("LabPipeline", namespace, name, status.state or "Waiting")
        if any(reason == "Stamped" for _, reason, _ in events):
            metrics.PIPELINE_RUNS.labels(namespace).inc()


def queue_pipeline(context: Context, namespace: str, name: str) -> None:
    context.enqueue(("LabPipeline", namespace, name), partial(reconcile_once, context, namespace, name))


def resync_pipelines(context: Context) -> None:
    """Lists the LabPipelines afresh into the store and queues each."""
    bodies, version = context.kube.list_resources(LabPipeline, context.settings.namespaces)
    context.store.relist("LabPipeline", bodies, version)
    for body in bodies:
        queue_pipeline(context, body["metadata"]["namespace"], body["metadata"]["name"])
