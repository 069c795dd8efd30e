"""What every reconciliation works with, created once when the operator starts (kept in kopf's
memo): the API, the settings, the work queue, the watch store, the Event recorder and the retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labtune.operator.events import Recorder
from labtune.operator.kube import Kube
from labtune.operator.settings import OperatorSettings
from labtune.operator.store import Store
from labtune.operator.workqueue import Key, WorkQueue


@dataclass
class Retries:
    """Reconciliations that failed with a temporary error, due again at a time (one entry per
    resource: a later failure does not stack another retry)."""

    due: dict[Key, tuple[float, Callable[[], None]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def later(self, key: Key, delay: float, again: Callable[[], None]) -> None:
        with self.lock:
            self.due[key] = (time.monotonic() + delay, again)

    def take_due(self) -> list[tuple[Key, Callable[[], None]]]:
        moment = time.monotonic()
        with self.lock:
            ready = [key for key, (at, _) in self.due.items() if at <= moment]
            return [(key, self.due.pop(key)[1]) for key in ready]


@dataclass(frozen=True)
class Context:
    """Everything a reconciliation uses, created once at startup."""

    kube: Kube
    settings: OperatorSettings
    queue: WorkQueue
    store: Store = field(default_factory=Store)
    recorder: Recorder | None = None
    retries: Retries = field(default_factory=Retries)


def context_of(memo: Any) -> Context:
    context: Context = memo.context
    return context
