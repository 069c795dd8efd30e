"""A work queue of resource keys served by a fixed set of threads.

Watch events only put keys here (the store already holds what they said), so kopf's per-object
workers finish at once instead of each waiting, with its event and body, for a handler thread: a
burst of a thousand new resources costs a thousand small queue entries, not a thousand parked
workers (see machinery/README.md for the figures).

A key is served by one thread at a time. Queued again before a thread took it, it is queued once
(the reconciliation reads the newest state anyway), which is how a resource's own event and its
Job's coalesce. Queued again while a thread runs it, it runs once more after that run ends, on
whichever thread is free — never on a second thread waiting for the first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
Key = tuple[str, str, str]
"""(kind, namespace, name)"""
Work = Callable[[], None]


class WorkQueue:
    def __init__(self, threads: int) -> None:
        self._pending: dict[Key, Work] = {}  # insertion order is the order served
        self._running: set[Key] = set()
        self._again: dict[Key, Work] = {}  # queued while running: served after the run ends
        self._changed = threading.Condition()
        for index in range(threads):
            threading.Thread(target=self._serve, name=f"reconcile-{index}", daemon=True).start()

    def add(self, key: Key, work: Work) -> None:
        with self._changed:
            if key in self._running:
                self._again.setdefault(key, work)
            elif key not in self._pending:
                self._pending[key] = work
                self._changed.notify()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until nothing is queued or running; False when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _take(self) -> tuple[Key, Work]:
        with self._changed:
            while not self._pending:
                self._changed.wait()
            key = next(iter(self._pending))
            self._running.add(key)
            return key, self._pending.pop(key)

    def _done(self, key: Key) -> None:
        with self._changed:
            self._running.discard(key)
            if key in self._again:
                self._pending[key] = self._again.pop(key)
            self._changed.notify_all()  # a free thread takes the key; wait_idle looks again

    def _serve(self) -> None:
        while True:
            key, work = self._take()
            try:
                work()
            except Exception:  # a bug in one reconciliation must not take a worker thread with it
                log.exception("reconciliation of %s %s/%s failed", *key)
            finally:
                self._done(key)
