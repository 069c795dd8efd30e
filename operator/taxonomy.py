"""Taxonomy: a short sync Job per spec generation and per interval tick (clone, pin the commit,
validate, find changed leaves); status from the sync pod's summary."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from labtune.api import Taxonomy
from labtune.api.base import BatchSpec
from labtune.contract.taxonomy import GitCheckout, TaxonomySyncConfig, TaxonomySyncSummary
from labtune.operator import conditions as cond
from labtune.operator.jobs import build_config_map, build_job
from labtune.operator.kube import Kube
from labtune.operator.naming import child_labels, child_metadata, child_name, default_output, selector
from labtune.operator.observe import JobView, Refusal, failure_detail, termination_message, view_job
from labtune.operator.podspec import CONFIG_PATH, FileMount, PodRequest, build_pod_template
from labtune.operator.runs import JOB_NAME_LABEL, create_children, why_pods_wait
from labtune.operator.settings import OperatorSettings

COMPONENT = "sync"
GIT_CREDENTIALS_DIR = "/var/run/secrets/labtune/git"
# A sync is short; keep finished sync Jobs an hour for `kubectl logs`, then let them go.
SYNC_BATCH = BatchSpec(backoff_limit=2, active_deadline_seconds=900, ttl_seconds_after_finished=3600)


def _seconds(duration: str) -> float:
    """Seconds of a Go-style duration (`90s`, `5m`, `1h30m`, `1.5h`)."""
    total, number = 0.0, ""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    index = 0
    while index < len(duration):
        char = duration[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = "ms" if duration.startswith("ms", index) else char
        total += float(number) * units[unit]
        number, index = "", index + len(unit)
    return total


def sync_job_name(name: str, generation: int, interval: str | None, epoch: float) -> str:
    """The sync Job due now: one per spec generation and, with an interval, per interval tick."""
    tick = int(epoch // _seconds(interval)) if interval else 0
    digest = hashlib.sha256(f"{generation}/{tick}".encode()).hexdigest()[:8]
    return child_name(name, f"sync-{digest}")


def build_sync_config(taxonomy: Taxonomy, manifest: str, settings: OperatorSettings) -> TaxonomySyncConfig:
    git = taxonomy.spec.source.git
    ref = git.ref
    return TaxonomySyncConfig(
        artifact_root=settings.artifact_root,
        metrics_port=settings.job_metrics_port,
        git=GitCheckout(
            url=git.url,
            branch=ref.branch if ref else None,
            tag=ref.tag if ref else None,
            commit=ref.commit if ref else None,
            credentials_dir=GIT_CREDENTIALS_DIR if git.secret_ref else None,
        ),
        base=taxonomy.spec.base,
        include=taxonomy.spec.include,
        exclude=taxonomy.spec.exclude,
        manifest=manifest,
    )


def build_sync_children(
    body: Mapping[str, Any], taxonomy: Taxonomy, job_name: str, settings: OperatorSettings
) -> tuple[dict[str, Any], ...]:
    """ConfigMap and Job of one sync."""
    output = taxonomy.spec.output or default_output(body, settings.artifact_claim)
    config = build_sync_config(taxonomy, f"{output.rstrip('/')}/{job_name}/manifest.json", settings)
    secret = taxonomy.spec.source.git.secret_ref
    request = PodRequest(
        component=COMPONENT,
        image=settings.generator_image,
        args=("taxonomy", "sync", "--config", CONFIG_PATH),
        config_map=job_name,
        scheduling=taxonomy.spec.scheduling,
        artifact_uris=(output,),
        files=(FileMount("secret", secret.name, GIT_CREDENTIALS_DIR),) if secret else (),
    )
    meta = child_metadata(body, job_name, COMPONENT)
    template = build_pod_template(child_labels(body, COMPONENT), request, settings)
    return build_config_map(meta, config), build_job(meta, template, SYNC_BATCH)


@dataclass(frozen=True)
class SyncResult:
    """Status fields and conditions that follow from the newest finished sync."""

    fields: Mapping[str, Any]
    ready: tuple[bool, str, str]
    validated: tuple[bool, str, str] | None
    stalled: bool


def sync_result(view: JobView, pods: list[dict[str, Any]]) -> SyncResult:
    if view.failed:
        detail = failure_detail(pods)
        message = f"sync Job {view.name} failed: {view.reason}" + (f" ({detail})" if detail else "")
        return SyncResult({}, (False, "SyncFailed", message), None, stalled=True)
    try:
        summary = TaxonomySyncSummary.model_validate_json(termination_message(pods, "Succeeded") or "")
    except ValidationError as error:
        message = f"sync Job {view.name} succeeded without a valid summary: {error.errors()[0]['msg']}"
        return SyncResult({}, (False, "InvalidSummary", message), None, stalled=True)
    fields = {
        "revision": summary.commit,
        "leafCounts": summary.leaf_counts.to_wire(),
        "changedLeaves": summary.changed_leaves[:256],
        "changedLeafCount": summary.changed_leaf_count,
        "errors": [e.to_wire() for e in summary.errors[:50]],
        "errorCount": summary.error_count,
        "warnings": [w.to_wire() for w in summary.warnings[:50]],
        "warningCount": summary.warning_count,
        "manifest": summary.manifest,
        "lastSyncTime": view.completion_time,
    }
    counts = f"{summary.leaf_counts.total} leaves, {summary.changed_leaf_count} changed"
    if summary.error_count:
        first = summary.errors[0] if summary.errors else None
        where = f"; first: {first.path}:{first.line or '?'}: {first.message}" if first else ""
        message = f"{summary.error_count} validation error(s) at {summary.commit[:12]}{where}"
        return SyncResult(
            fields, (False, "ValidationFailed", message), (False, "ValidationFailed", message), False
        )
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
        return SyncResult(fields, (False, "NoLeaves", message), (False, "NoLeaves", message), False)
    message = f"synced {summary.commit[:12]}: {counts}"
    return SyncResult(fields, (True, "Synced", message), (True, "Valid", counts), False)


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
    kube: Kube, body: Mapping[str, Any], settings: OperatorSettings, timestamp: str, epoch: float
) -> tuple[str, str] | None:
    """Starts the sync that is due and reports the newest finished one; returns (reason, message)
    of Ready when it changed."""
    meta = body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 0)
    taxonomy = Taxonomy.model_validate(body)
    old: dict[str, Any] = dict(body.get("status") or {})
    jobs = sorted(kube.list_jobs(namespace, selector("Taxonomy", name)), key=_created)
    views = [view_job(job) for job in jobs]
    due = sync_job_name(name, generation, taxonomy.spec.interval, epoch)
    running = [v for v in views if not (v.complete or v.failed)]
    refused: Refusal | None = None
    status: dict[str, Any] = {"observedGeneration": generation}
    conditions: list[dict[str, Any]] = list(old.get("conditions") or [])
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
    if newest is not None and not (newest.complete and old.get("lastSyncTime") == newest.completion_time):
        pods = kube.list_pods(namespace, {**selector("Taxonomy", name), JOB_NAME_LABEL: newest.name})
        result = sync_result(newest, pods)
        status.update(result.fields)
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
    if newest is None and not old.get("lastSyncTime") and cond.find(conditions, cond.STALLED) is None:
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
    status["conditions"] = conditions
    if all(old.get(key) == value for key, value in status.items()):
        return None
    kube.patch_status(Taxonomy, namespace, name, status)
    old_ready = cond.find(old.get("conditions") or [], "Ready") or {}
    new_ready = cond.find(conditions, "Ready") or {}
    if (old_ready.get("status"), old_ready.get("reason")) == (
        new_ready.get("status"),
        new_ready.get("reason"),
    ):
        return None
    return str(new_ready.get("reason", "")), str(new_ready.get("message", ""))
