"""What every handler shares: the API, the watch store and the settings (kept in kopf's memo),
error mapping and retries, metrics and Events around one reconciliation."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from labtune.api.resource import Resource
from labtune.operator import metrics
from labtune.operator.conditions import now
from labtune.operator.context import Context
from labtune.operator.events import Recorder
from labtune.operator.runs import RunKind, StaleBody, Transition, reconcile_run
from labtune.operator.workqueue import Key

log = logging.getLogger(__name__)
_RETRYABLE = {409, 429, 500, 502, 503, 504}
STALE_RETRIES = 5
"""Reads of the resource after a 409 on its status write (another writer came first) before
the reconciliation is handed to the retry queue."""


class Gone(Exception):
    """The resource was deleted while being reconciled: nothing left to do."""


@contextmanager
def reconciliation(kind: str) -> Iterator[None]:
    """Times one reconciliation and turns API failures into kopf's retry semantics."""
    started = time.perf_counter()
    result = "error"
    try:
        yield
        result = "ok"
    except Gone:
        result = "ok"
    except ApiException as error:
        if error.status == 404:
            result = "ok"  # deleted under us; garbage collection removes the rest
        elif error.status in _RETRYABLE:
            raise kopf.TemporaryError(f"API {error.status} {error.reason}: retrying", delay=5) from error
        elif error.status in (401, 403):
            raise kopf.TemporaryError(
                f"API {error.status} {error.reason}: the operator's credentials or RBAC do not allow this "
                "(see deploy/rbac); retrying in a minute",
                delay=60,
            ) from error
        else:
            raise kopf.PermanentError(f"API {error.status} {error.reason}: {error.body}") from error
    except ValidationError as error:
        # The API server accepted what the models reject: an operator/CRD version skew.
        raise kopf.PermanentError(f"{kind} does not match the operator's API models: {error}") from error
    finally:
        metrics.RECONCILIATIONS.labels(kind, result).inc()
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)


def enqueue(context: Context, key: Key, work: Callable[[], None]) -> None:
    """Queues one reconciliation (from a watch event, a resync or a retry) for the worker threads."""
    context.queue.add(key, partial(guarded, context, key, work))


def guarded(context: Context, key: Key, work: Callable[[], None]) -> None:
    """Runs one queued reconciliation. kopf does not retry event handlers, so a temporary failure is
    queued again after its delay; a permanent one is logged (the resource keeps its last status
    until its spec or children change)."""
    try:
        work()
    except kopf.TemporaryError as error:
        log.warning("%s %s/%s: %s", *key, error)
        context.retries.later(key, error.delay or 5, work)
    except kopf.PermanentError as error:
        log.error("%s %s/%s: %s", *key, error)


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


_locks: defaultdict[Key, threading.Lock] = defaultdict(threading.Lock)


def serialized(kind: str, namespace: str, name: str) -> threading.Lock:
    """The lock that keeps reconciliations of one resource from overlapping."""
    return _locks[(kind, namespace, name)]


def forget(kind: str, namespace: str, name: str) -> None:
    _locks.pop((kind, namespace, name), None)
    metrics.RESOURCE_STATES.forget(kind, namespace, name)
    metrics.EVALUATION_SCORES.forget(kind, namespace, name)


def read_run(context: Context, resource: type[Resource], namespace: str, name: str) -> dict[str, Any]:
    """The run as the API has it now (kept in the store); Gone when deleted."""
    body = context.kube.get_resource(resource, namespace, name)
    if body is None:
        raise Gone()
    return context.store.put_owner(body)


def run_once(context: Context, kind: RunKind, namespace: str, name: str) -> None:
    """One reconciliation of a run (SyntheticDataRun or TuningJob) with metrics and Events.

    Reconciliations of one resource are serialised and start from the newest body the watch or
    our own writes have shown; a status write from a body that turned out stale fails with 409,
    and the reconciliation starts again from a fresh read — so two triggers at once (its own event
    and its Job's) cannot both announce the same transition."""
    kind_name = kind.resource.kind_name()
    key = (kind_name, namespace, name)
    with serialized(*key), reconciliation(kind_name):
        cached = context.store.owner(*key)
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
            raise kopf.TemporaryError(
                f"every status write met 409 Conflict {STALE_RETRIES} times: another writer keeps changing it"
            )
        announce(context.recorder, body, transition)
        state = transition.outcome.state if transition else (body.get("status") or {}).get("state")
        metrics.RESOURCE_STATES.set(kind_name, namespace, name, state or "Pending")


def run_each(context: Context, kind: RunKind, namespace: str, names: Iterable[str]) -> None:
    """Reconciles several runs of one kind (the dependents of a changed resource)."""
    kind_name = kind.resource.kind_name()
    for name in names:
        enqueue(context, (kind_name, namespace, name), partial(run_once, context, kind, namespace, name))


def on_run_event(context: Context, kind: RunKind, event: Mapping[str, Any]) -> None:
    """A watch event of a run: keep its body and queue its reconciliation (or forget it when
    deleted). Cheap enough for the event loop."""
    body = event["object"]
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if event.get("type") == "DELETED":
        context.store.drop_owner(body["kind"], namespace, name)
        forget(body["kind"], namespace, name)
        return
    context.store.put_owner(body)
    metrics.EVALUATION_SCORES.update(body)
    key = (body["kind"], namespace, name)
    enqueue(context, key, partial(run_once, context, kind, namespace, name))
