"""What happens when a reconciliation fails: API errors sorted into retry-later and give-up, and
retries on a capped exponential backoff with jitter, one pending retry per resource.

kopf never sees these: every reconciliation runs on the work queue's threads, not in a kopf
handler, so kopf's TemporaryError/PermanentError would mean nothing here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from labtune.operator import operator_metrics as metrics
from labtune.operator.machinery.work_queue import Key, Work

log = logging.getLogger(__name__)
RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})
FORBIDDEN_WAIT_S = 60.0
"""A 401/403 needs a person (credentials, RBAC): retrying sooner only fills the log."""


class RetryLater(Exception):
    """A failure that may pass (the API server overloaded, a conflict that kept repeating): the
    reconciliation runs again after a backoff of at least `at_least` seconds."""

    def __init__(self, message: str, *, at_least: float = 0.0) -> None:
        super().__init__(message)
        self.at_least = at_least


class GiveUp(Exception):
    """A failure retrying cannot fix: logged; the resource keeps its last status until it or its
    children change (each change queues it anew)."""


class Gone(Exception):
    """The resource was deleted while being reconciled: nothing left to do."""


@dataclass(frozen=True)
class Backoff:
    """Exponential delays with jitter: the n-th failure in a row waits a random time between half
    and all of min(cap, base · 2ⁿ⁻¹), so resources that failed together do not retry together."""

    base_s: float = 1.0
    cap_s: float = 300.0

    def delay(self, failures: int, rng: random.Random) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0 ** max(failures - 1, 0))
        return ceiling * rng.uniform(0.5, 1.0)


@dataclass
class Retries:
    """Reconciliations that failed with RetryLater, each due again at a time (one entry per
    resource: a later failure replaces its retry instead of stacking another)."""

    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random = field(default_factory=random.Random)
    _due: dict[Key, tuple[float, Work]] = field(default_factory=dict)
    _failures: dict[Key, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def later(self, key: Key, work: Work, at_least: float = 0.0) -> float:
        """Schedules `work` after the key's next backoff; returns the delay in seconds."""
        with self._lock:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = max(at_least, self.backoff.delay(failures, self.rng))
            self._due[key] = (time.monotonic() + delay, work)
        return delay

    def succeeded(self, key: Key) -> None:
        """The key reconciled: its next failure starts the backoff from the beginning."""
        with self._lock:
            self._failures.pop(key, None)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._due.pop(key, None)

    def take_due(self) -> list[tuple[Key, Work]]:
        moment = time.monotonic()
        with self._lock:
            ready = [key for key, (at, _) in self._due.items() if at <= moment]
            return [(key, self._due.pop(key)[1]) for key in ready]


def run_with_retries(retries: Retries, key: Key, work: Work) -> None:
    """Runs one queued reconciliation: a RetryLater schedules it again, a GiveUp is logged."""
    try:
        work()
    except RetryLater as error:
        delay = retries.later(key, work, error.at_least)
        log.warning("%s %s/%s: %s; retrying in %.1fs", *key, error, delay)
        return
    except GiveUp as error:
        log.error("%s %s/%s: %s", *key, error)
    retries.succeeded(key)


@contextmanager
def reconciliation(kind: str) -> Iterator[None]:
    """Times one reconciliation and sorts its API failures into RetryLater and GiveUp."""
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
        elif error.status in RETRYABLE:
            raise RetryLater(f"API {error.status} {error.reason}") from error
        elif error.status in (401, 403):
            raise RetryLater(
                f"API {error.status} {error.reason}: the operator's credentials or RBAC do not allow this "
                "(see deploy/rbac)",
                at_least=FORBIDDEN_WAIT_S,
            ) from error
        else:
            raise GiveUp(f"API {error.status} {error.reason}: {error.body}") from error
    except ValidationError as error:
        # The API server accepted what the models reject: an operator/CRD version skew.
        raise GiveUp(f"{kind} does not match the operator's API models: {error}") from error
    finally:
        metrics.RECONCILIATIONS.labels(kind, result).inc()
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
