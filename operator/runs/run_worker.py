"""The work items of the run kinds (SyntheticDataRun, TuningJob) on the work queue: one
reconciliation with its Events and metrics, what a watch event or a dependency's change queues, and
the periodic tasks (full resync, progress scrape) the resync thread runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from kubernetes.client.exceptions import ApiException

from labtune.api.resource import Resource
from labtune.operator import operator_metrics as metrics
from labtune.operator.children.child_names import MANAGED_BY
from labtune.operator.conditions import now
from labtune.operator.machinery.context import Context
from labtune.operator.machinery.event_recorder import Recorder
from labtune.operator.machinery.retries import Gone, RetryLater, reconciliation
from labtune.operator.runs.run_progress import refresh_progress
from labtune.operator.runs.run_reconcile import RunKind, StaleBody, Transition, reconcile_run

STALE_RETRIES = 5
"""Reads of the resource after a 409 on its status write (another writer came first) before
the reconciliation is handed to the retries."""
RunKinds = Mapping[str, RunKind]
"""The run kinds by kind name."""


def read_run(context: Context, resource: type[Resource], namespace: str, name: str) -> dict[str, Any]:
    """The run as the API has it now (kept in the store); Gone when deleted."""
    body = context.kube.get_resource(resource, namespace, name)
    if body is None:
        raise Gone()
    return context.store.put_owner(body)


def announce(recorder: Recorder | None, body: Mapping[str, Any], transition: Transition | None) -> None:
    """An Event for a state change, and the metrics of a finished run."""
    if transition is None:
        return
    outcome = transition.outcome
    kind, namespace = body["kind"], body["metadata"]["namespace"]
    warning = outcome.state == "Failed" or outcome.stalled
    if recorder is not None:
        recorder.record(
            body, "Warning" if warning else "Normal", outcome.reason, outcome.message or outcome.state
        )
    if outcome.state in ("Succeeded", "Failed"):
        if transition.duration_s is not None:
            metrics.JOB_SECONDS.labels(kind, outcome.state).observe(transition.duration_s)
        if transition.gpu_seconds:
            metrics.GPU_SECONDS.labels(namespace, kind).inc(transition.gpu_seconds)


def run_once(context: Context, kind: RunKind, namespace: str, name: str, *, scrape: bool = False) -> None:
    """One reconciliation of a run with metrics and Events; with `scrape`, a running run's pod
    metrics are read into status afterwards.

    The work queue never runs two reconciliations of one run at once. Each starts from the newest
    body the watch or our own writes have shown; a status write from a body that turned out stale
    fails with 409, and the reconciliation starts again from a fresh read."""
    kind_name = kind.resource.kind_name()
    with reconciliation(kind_name):
        cached = context.store.owner(kind_name, namespace, name)
        body, fresh = (cached, False) if cached else (read_run(context, kind.resource, namespace, name), True)
        for _ in range(STALE_RETRIES):
            try:
                transition = reconcile_run(
                    context.kube, context.store, body, kind, context.settings, now(), fresh=fresh
                )
                break
            except StaleBody:
                pass
            except ApiException as error:
                if error.status != 409:
                    raise
            body, fresh = read_run(context, kind.resource, namespace, name), True
        else:
            raise RetryLater(
                f"every status write met 409 Conflict {STALE_RETRIES} times: another writer keeps changing it"
            )
        announce(context.recorder, body, transition)
        state = transition.outcome.state if transition else (body.get("status") or {}).get("state")
        metrics.RESOURCE_STATES.set(kind_name, namespace, name, state or "Pending")
        if scrape and state == "Running":
            newest = context.store.owner(kind_name, namespace, name) or body
            refresh_progress(context, newest, kind)


def run_each(context: Context, kind: RunKind, namespace: str, names: Iterable[str]) -> None:
    """Queues several runs of one kind (the dependents of a changed resource)."""
    kind_name = kind.resource.kind_name()
    for name in names:
        context.enqueue((kind_name, namespace, name), partial(run_once, context, kind, namespace, name))


def forget_run(context: Context, kind_name: str, namespace: str, name: str) -> None:
    context.forget((kind_name, namespace, name))
    metrics.RESOURCE_STATES.forget(kind_name, namespace, name)
    metrics.EVALUATION_SCORES.forget(kind_name, namespace, name)


def on_run_event(context: Context, kind: RunKind, event: Mapping[str, Any]) -> None:
    """A watch event of a run: keep its body and queue its reconciliation (or forget it when
    deleted). Cheap enough for the event loop."""
    body = event["object"]
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if event.get("type") == "DELETED":
        forget_run(context, body["kind"], namespace, name)
        return
    context.store.put_owner(body)
    metrics.EVALUATION_SCORES.update(body)
    run_each(context, kind, namespace, (name,))


def resync_runs(context: Context, kinds: RunKinds) -> None:
    """Lists every child Job and run afresh, refreshes the store and queues every run: the
    level-triggered safety net for a missed watch event or a reconciliation that gave up."""
    namespaces = context.settings.namespaces
    jobs, version = context.kube.list_all_jobs({MANAGED_BY: "labtune"}, namespaces)
    context.store.relist_jobs(jobs, version)
    for kind_name, kind in kinds.items():
        runs, version = context.kube.list_resources(kind.resource, namespaces)
        context.store.relist(kind_name, runs, version)
        for run in runs:
            run_each(context, kind, run["metadata"]["namespace"], (run["metadata"]["name"],))


def scrape_running(context: Context, kinds: RunKinds) -> None:
    """Queues every running run for a reconciliation that also reads its pod's metrics."""
    for kind_name, kind in kinds.items():
        for body in context.store.owners(kind_name):
            if (body.get("status") or {}).get("state") == "Running":
                meta = body["metadata"]
                work = partial(run_once, context, kind, meta["namespace"], meta["name"], scrape=True)
                context.enqueue((kind_name, meta["namespace"], meta["name"]), work)
