"""A work queue of resource keys served by a fixed set of threads.

Watch events only put keys here (the store already holds what they said), so kopf's per-object
workers finish at once instead of each waiting, with its event and body, for a handler thread: a
burst of a thousand new resources costs a thousand small queue entries, not a thousand parked
workers. A key queued again before a thread took it is queued once (the reconciliation reads the
newest state anyway), which is how a resource's own event and its Job's coalesce.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
Key = tuple[str, str, str]
"""(kind, namespace, name)"""


class WorkQueue:
    def __init__(self, threads: int) -> None:
        self._pending: dict[Key, Callable[[], None]] = {}
        self._ready = threading.Condition()
        for index in range(threads):
            threading.Thread(target=self._serve, name=f"reconcile-{index}", daemon=True).start()

    def add(self, key: Key, work: Callable[[], None]) -> None:
        with self._ready:
            if key not in self._pending:
                self._pending[key] = work
                self._ready.notify()

    def _take(self) -> Callable[[], None]:
        with self._ready:
            while not self._pending:
                self._ready.wait()
            key = next(iter(self._pending))
            return self._pending.pop(key)

    def _serve(self) -> None:
        while True:
            work = self._take()
            try:
                work()
            except Exception:  # a bug in one reconciliation must not take a worker thread with it
                log.exception("reconciliation failed")
