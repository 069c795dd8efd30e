"""What every handler shares: the API and settings kept in kopf's memo, error mapping, metrics
and Events around one reconciliation."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from labtune.api.resource import Resource
from labtune.operator import metrics
from labtune.operator.conditions import now
from labtune.operator.kube import Kube
from labtune.operator.runs import RunKind, Transition, reconcile_run
from labtune.operator.settings import OperatorSettings

_RETRYABLE = {409, 429, 500, 502, 503, 504}


def kube_of(memo: Any) -> Kube:
    kube: Kube = memo.kube
    return kube


def settings_of(memo: Any) -> OperatorSettings:
    settings: OperatorSettings = memo.settings
    return settings


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


def announce(body: Mapping[str, Any], transition: Transition | None) -> None:
    """An Event for a state change, and the metrics of a finished run."""
    if transition is None:
        return
    outcome = transition.outcome
    kind, namespace = body["kind"], body["metadata"]["namespace"]
    warning = outcome.state == "Failed" or outcome.stalled
    message = outcome.message or outcome.state
    kopf.event(
        cast(kopf.Body, body), type="Warning" if warning else "Normal", reason=outcome.reason, message=message
    )
    if outcome.state in ("Succeeded", "Failed"):
        if transition.duration_s is not None:
            metrics.JOB_SECONDS.labels(kind, outcome.state).observe(transition.duration_s)
        if transition.gpu_seconds:
            metrics.GPU_SECONDS.labels(namespace, kind).inc(transition.gpu_seconds)


_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)


def serialized(kind: str, namespace: str, name: str) -> threading.Lock:
    """The lock that keeps reconciliations of one resource from overlapping."""
    return _locks[(kind, namespace, name)]


def current(memo: Any, resource: type[Resource], namespace: str, name: str) -> dict[str, Any]:
    """The resource as it is now (not as the triggering event saw it); Gone when deleted."""
    body = kube_of(memo).get_resource(resource, namespace, name)
    if body is None:
        raise Gone()
    return body


def run_once(memo: Any, kind: RunKind, namespace: str, name: str) -> None:
    """One reconciliation of a run (SyntheticDataRun or TuningJob) with metrics and Events.

    Reconciliations of one resource are serialised and start from its current body, so that two
    triggers at once (its own event and its Job's) cannot both announce the same transition."""
    kind_name = kind.resource.kind_name()
    with serialized(kind_name, namespace, name), reconciliation(kind_name):
        body = current(memo, kind.resource, namespace, name)
        transition = reconcile_run(kube_of(memo), body, kind, settings_of(memo), now())
        announce(body, transition)
        state = transition.outcome.state if transition else (body.get("status") or {}).get("state")
        metrics.RESOURCE_STATES.set(kind_name, namespace, name, state or "Pending")
