"""The controller machinery without a cluster: a key re-queued while it runs, the backoff of
retries, and the periodic tasks of the resync thread."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from labtune.operator.machinery.resync import Periodic, tick
from labtune.operator.machinery.retries import (
    Backoff,
    GiveUp,
    Retries,
    RetryLater,
    reconciliation,
    run_with_retries,
)
from labtune.operator.machinery.work_queue import WorkQueue

KEY = ("TuningJob", "ns", "a")


def test_a_key_queued_while_it_runs_runs_once_after_it_on_one_thread_at_a_time() -> None:
    started, release = threading.Event(), threading.Event()
    running, overlapped, calls = [0], [False], []
    lock = threading.Lock()

    def work(tag: str) -> None:
        with lock:
            running[0] += 1
            overlapped[0] |= running[0] > 1
        started.set()
        if tag == "first":
            release.wait(5)
        calls.append(tag)
        with lock:
            running[0] -= 1

    queue = WorkQueue(threads=4)
    queue.add(KEY, lambda: work("first"))
    assert started.wait(5)
    for tag in ("second", "third"):  # both while the first runs: coalesced into one run after it
        queue.add(KEY, lambda tag=tag: work(tag))
    release.set()
    assert queue.wait_idle(5)
    assert calls == ["first", "second"]
    assert not overlapped[0]  # four free threads, still never two runs of one key at once


def test_other_keys_run_while_one_key_is_busy() -> None:
    release, other = threading.Event(), threading.Event()
    queue = WorkQueue(threads=2)
    queue.add(KEY, lambda: release.wait(5) and None)
    queue.add(("TuningJob", "ns", "b"), other.set)
    assert other.wait(5)
    release.set()
    assert queue.wait_idle(5)


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (9, 128.0, 256.0), (10, 150.0, 300.0), (30, 150.0, 300.0)],
)
def test_backoff_doubles_with_jitter_up_to_its_cap(failures: int, low: float, high: float) -> None:
    rng = random.Random(7)
    delays = [Backoff(base_s=1.0, cap_s=300.0).delay(failures, rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) / 2  # spread, so failed resources do not retry together


def test_retries_back_off_per_key_and_start_over_after_a_success() -> None:
    retries = Retries(rng=random.Random(1))
    outcomes = iter([RetryLater("503"), RetryLater("503"), RetryLater("503"), None, RetryLater("503")])

    def work() -> None:
        if (error := next(outcomes)) is not None:
            raise error

    ceilings = []
    for _ in range(5):
        before = retries._failures.get(KEY, 0)
        run_with_retries(retries, KEY, work)
        ceilings.append(2.0**before if retries._failures.get(KEY) else None)
        retries.take_due()  # what the resync thread does once they are due
    assert ceilings == [1.0, 2.0, 4.0, None, 1.0]  # 1 s, 2 s, 4 s, then from the start after a success
    retries.later(("TuningJob", "ns", "b"), work)
    assert retries._failures[("TuningJob", "ns", "b")] == 1  # each key its own count


def test_a_forbidden_api_waits_at_least_a_minute_and_a_bad_request_gives_up() -> None:
    retries = Retries()

    def forbidden() -> None:
        with reconciliation("TuningJob"):
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(RetryLater) as raised:
        forbidden()
    assert raised.value.at_least == 60.0
    assert retries.later(KEY, forbidden, raised.value.at_least) >= 60.0

    def invalid() -> None:
        with reconciliation("TuningJob"):
            raise ApiException(status=422, reason="Unprocessable Entity")

    with pytest.raises(GiveUp, match="API 422"):
        invalid()
    run_with_retries(retries, ("TuningJob", "ns", "b"), invalid)  # logged, not retried
    assert ("TuningJob", "ns", "b") not in retries._due


def test_the_resync_tick_queues_due_retries_and_runs_tasks_on_their_interval() -> None:
    ran: list[str] = []
    queued: list[Any] = []

    class Context:
        retries = Retries()

        def enqueue(self, key: Any, work: Any) -> None:
            queued.append(key)

    context: Any = Context()
    context.retries._due[KEY] = (0.0, lambda: None)
    tasks = (Periodic("a", 10.0, lambda _: ran.append("a")), Periodic("b", 30.0, lambda _: ran.append("b")))
    due = {"a": 10.0, "b": 30.0}
    for moment in (5.0, 10.0, 15.0, 20.0, 30.0):
        tick(context, tasks, due, moment)
    assert queued == [KEY]
    assert ran == ["a", "a", "a", "b"]
