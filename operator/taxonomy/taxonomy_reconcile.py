"""A Taxonomy's reconciliation: start the sync that is due and report the newest finished one in
status (revision, leaf counts, validation, changed leaves)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from labtune.api import Taxonomy
from labtune.api.taxonomy_types import TaxonomyStatus
from labtune.contract.taxonomy_sync import TaxonomySyncSummary
from labtune.operator import conditions as cond
from labtune.operator import operator_metrics as metrics
from labtune.operator.children.child_names import (
    selector,
)
from labtune.operator.children.job_observe import (
    JobView,
    Refusal,
    failure_detail,
    termination_message,
    view_job,
)
from labtune.operator.conditions import now
from labtune.operator.machinery.api_client import Kube
from labtune.operator.machinery.context import Context
from labtune.operator.machinery.retries import Gone, reconciliation
from labtune.operator.runs.run_reconcile import (
    JOB_NAME_LABEL,
    create_children,
    merge,
    status_patch,
    unchanged,
    why_pods_wait,
)
from labtune.operator.settings import OperatorSettings
from labtune.operator.taxonomy.taxonomy_builders import build_sync_children, sync_job_name


@dataclass(frozen=True)
class SyncResult:
    """Status fields and conditions that follow from the newest finished sync."""

    ready: tuple[bool, str, str]
    validated: tuple[bool, str, str] | None = None
    stalled: bool = False
    fields: TaxonomyStatus = field(default_factory=TaxonomyStatus)
    """The status fields the sync's summary sets (none when it has no valid one)."""


def sync_result(view: JobView, pods: list[dict[str, Any]]) -> SyncResult:
    if view.failed:
        detail = failure_detail(pods)
        message = f"sync Job {view.name} failed: {view.reason}" + (f" ({detail})" if detail else "")
        return SyncResult((False, "SyncFailed", message), stalled=True)
    try:
        summary = TaxonomySyncSummary.model_validate_json(termination_message(pods, "Succeeded") or "")
    except ValidationError as error:
        message = f"sync Job {view.name} succeeded without a valid summary: {error.errors()[0]['msg']}"
        return SyncResult((False, "InvalidSummary", message), stalled=True)
    fields = TaxonomyStatus(
        revision=summary.commit,
        leaf_counts=summary.leaf_counts,
        changed_leaves=summary.changed_leaves[:256],
        changed_leaf_count=summary.changed_leaf_count,
        errors=summary.errors[:50],
        error_count=summary.error_count,
        warnings=summary.warnings[:50],
        warning_count=summary.warning_count,
        manifest=summary.manifest,
        leaves_digest=summary.leaves_digest,
        last_sync_time=view.completion_time,
    )
    counts = f"{summary.leaf_counts.total} leaves, {summary.changed_leaf_count} changed"
    if summary.error_count:
        first = summary.errors[0] if summary.errors else None
        where = f"; first: {first.path}:{first.line or '?'}: {first.message}" if first else ""
        # Status holds the first errors only: say where the rest are.
        rest = f"; all of them in {summary.manifest}" if summary.error_count > len(fields.errors) else ""
        message = f"{summary.error_count} validation error(s) at {summary.commit[:12]}{where}{rest}"
        failed = (False, "ValidationFailed", message)
        return SyncResult(failed, failed, fields=fields)
    if summary.warning_count:
        counts += f", {summary.warning_count} warning(s)"
        if summary.warnings:
            counts += f"; first: {summary.warnings[0].path}: {summary.warnings[0].message}"
    if not summary.leaf_counts.total:
        # Nothing to generate from: a run waiting on this taxonomy would wait for nothing.
        message = (
            f"no leaves at {summary.commit[:12]}: no qna.yaml under knowledge/ or compositional_skills/ "
            f"that spec.include and spec.exclude keep ({counts})"
        )
        return SyncResult((False, "NoLeaves", message), (False, "NoLeaves", message), fields=fields)
    message = f"synced {summary.commit[:12]}: {counts}"
    return SyncResult((True, "Synced", message), (True, "Valid", counts), fields=fields)


def _sync_problem(kube: Kube, namespace: str, name: str, view: JobView) -> tuple[str, str] | None:
    """Why the running sync Job's pod does not start, if it does not."""
    if view.ready or not view.active:
        return None
    pods = kube.list_pods(namespace, {**selector("Taxonomy", name), JOB_NAME_LABEL: view.name})
    return why_pods_wait(kube, namespace, pods)


def _created(job: Mapping[str, Any]) -> str:
    created: str = job["metadata"].get("creationTimestamp") or ""
    return created


def reconcile_taxonomy(
    kube: Kube, body: Mapping[str, Any], settings: OperatorSettings, timestamp: datetime, epoch: float
) -> tuple[str, str] | None:
    """Starts the sync that is due and reports the newest finished one; returns (reason, message)
    of Ready when it changed."""
    meta = body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 0)
    taxonomy = Taxonomy.model_validate(body)
    old = taxonomy.status or TaxonomyStatus()
    jobs = sorted(kube.list_jobs(namespace, selector("Taxonomy", name)), key=_created)
    views = [view_job(job) for job in jobs]
    due = sync_job_name(name, generation, taxonomy.spec.interval, epoch)
    running = [v for v in views if not (v.complete or v.failed)]
    refused: Refusal | None = None
    status = TaxonomyStatus(observed_generation=generation)
    conditions = list(old.conditions)
    if not running and due not in {v.name for v in views}:
        made = create_children(kube, build_sync_children(body, taxonomy, due, settings))
        if isinstance(made, Refusal):
            refused = made
        else:
            views.append(view_job(made))
            running = [views[-1]]
            conditions = cond.drop(conditions, cond.STALLED)  # a new attempt is under way
    finished = [v for v in views if v.complete or v.failed]
    newest = finished[-1] if finished else None
    if newest is not None and not (newest.complete and old.last_sync_time == newest.completion_time):
        pods = kube.list_pods(namespace, {**selector("Taxonomy", name), JOB_NAME_LABEL: newest.name})
        result = sync_result(newest, pods)
        merge(status, result.fields)
        ok, reason, message = result.ready
        conditions = cond.set_condition(conditions, "Ready", ok, reason, message, generation, timestamp)
        if result.validated is not None:
            valid, v_reason, v_message = result.validated
            conditions = cond.set_condition(
                conditions, "Validated", valid, v_reason, v_message, generation, timestamp
            )
        conditions = (
            cond.set_condition(conditions, cond.STALLED, True, reason, message, generation, timestamp)
            if result.stalled
            else cond.drop(conditions, cond.STALLED)
        )
    problem = (
        (refused.reason, refused.message)
        if refused
        else _sync_problem(kube, namespace, name, running[-1])
        if running
        else None
    )
    # No sync has finished (as far as status knows: finished Jobs go with their TTL): Ready says why
    # the first one's pod does not start. Later syncs leave Ready to the revision in hand.
    if newest is None and not old.last_sync_time and cond.find(conditions, cond.STALLED) is None:
        reason, message = problem or ("Syncing", f"first sync ({due}) in progress")
        conditions = cond.set_condition(conditions, "Ready", False, reason, message, generation, timestamp)
    if running or refused:
        reason, message = problem or ("Syncing", f"sync Job {running[-1].name} is running")
        conditions = cond.set_condition(
            conditions, cond.RECONCILING, True, reason, message, generation, timestamp
        )
    else:
        conditions = cond.drop(conditions, cond.RECONCILING)
    if refused and refused.lasting:
        conditions = cond.set_condition(
            conditions, cond.STALLED, True, refused.reason, refused.message, generation, timestamp
        )
    status.conditions = conditions
    if unchanged(old, status):
        return None
    kube.patch_status(Taxonomy, namespace, name, status_patch(status))
    old_ready, new_ready = cond.find(old.conditions, "Ready"), cond.find(conditions, "Ready")
    if new_ready is None or (
        old_ready is not None and (old_ready.status, old_ready.reason) == (new_ready.status, new_ready.reason)
    ):
        return None
    return new_ready.reason, new_ready.message


def sync_once(context: Context, namespace: str, name: str) -> None:
    """One reconciliation of a Taxonomy, from a fresh read (Taxonomies are few; their sync Jobs are
    listed each time, so the interval tick sees every finished sync)."""
    with reconciliation("Taxonomy"):
        body = context.kube.get_resource(Taxonomy, namespace, name)
        if body is None:
            raise Gone()
        context.store.put_owner(body)
        changed = reconcile_taxonomy(context.kube, body, context.settings, now(), time.time())
        if changed is not None and context.recorder is not None:
            reason, message = changed
            warning = reason not in ("Synced", "Syncing")
            context.recorder.record(body, "Warning" if warning else "Normal", reason, message)
        ready = cond.find(TaxonomyStatus.model_validate(body.get("status") or {}).conditions, "Ready")
        state = changed[0] if changed else ready.reason if ready else "Syncing"
        metrics.RESOURCE_STATES.set("Taxonomy", namespace, name, state)


def queue_sync(context: Context, namespace: str, name: str) -> None:
    context.enqueue(("Taxonomy", namespace, name), partial(sync_once, context, namespace, name))


def tick_taxonomies(context: Context) -> None:
    """Queues every known Taxonomy: a sync due by its interval starts within a tick."""
    for body in context.store.owners("Taxonomy"):
        queue_sync(context, body["metadata"]["namespace"], body["metadata"]["name"])


def resync_taxonomies(context: Context) -> None:
    """Lists the Taxonomies afresh into the store (a missed watch event) and queues each."""
    taxonomies, version = context.kube.list_resources(Taxonomy, context.settings.namespaces)
    context.store.relist("Taxonomy", taxonomies, version)
    tick_taxonomies(context)
