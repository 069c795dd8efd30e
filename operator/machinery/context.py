"""What every reconciliation works with, created once when the operator starts (kept in kopf's
memo): the API, the settings, the work queue, the watch store, the Event recorder and the retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from labtune.operator.machinery.api_client import Kube
from labtune.operator.machinery.event_recorder import Recorder
from labtune.operator.machinery.retries import Retries, run_with_retries
from labtune.operator.machinery.watch_store import Store
from labtune.operator.machinery.work_queue import Key, Work, WorkQueue
from labtune.operator.settings import OperatorSettings


@dataclass(frozen=True)
class Context:
    """Everything a reconciliation uses, created once at startup."""

    kube: Kube
    settings: OperatorSettings
    queue: WorkQueue
    store: Store = field(default_factory=Store)
    recorder: Recorder | None = None
    retries: Retries = field(default_factory=Retries)

    def enqueue(self, key: Key, work: Work) -> None:
        """Queues one reconciliation (from a watch event, a resync or a retry)."""
        self.queue.add(key, partial(run_with_retries, self.retries, key, work))

    def forget(self, key: Key) -> None:
        """A deleted resource: drop its retry and what the store knew of it."""
        self.retries.forget(key)
        self.store.drop_owner(*key)


def context_of(memo: Any) -> Context:
    context: Context = memo.context
    return context
