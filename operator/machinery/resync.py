"""One background thread for the whole operator, instead of a kopf timer per resource: each second
it queues the retries that are due, and it runs the periodic tasks when their interval comes round
(the full resync, the Taxonomy interval tick, the progress scrape of running runs).

A kopf timer per resource is a task and a loop per object; with thousands of resources they cost
more CPU than the reconciliations (machinery/README.md has the figures).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

from labtune.operator.machinery.context import Context

log = logging.getLogger(__name__)
TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Periodic:
    """A task the resync thread runs every `interval_s` seconds (the first run one interval after
    start: at start kopf's initial listing queues every resource anyway)."""

    name: str
    interval_s: float
    run: Callable[[Context], None]


def tick(context: Context, tasks: tuple[Periodic, ...], due: dict[str, float], moment: float) -> None:
    """One turn of the loop: queue due retries, run the periodic tasks whose time has come."""
    for key, again in context.retries.take_due():
        context.enqueue(key, again)
    for task in tasks:
        if moment < due[task.name]:
            continue
        due[task.name] = moment + task.interval_s
        try:
            task.run(context)
        except (ApiException, OSError) as error:
            log.warning("%s failed, trying again in %.0fs: %s", task.name, task.interval_s, error)


def _loop(context: Context, tasks: tuple[Periodic, ...]) -> None:
    start = time.monotonic()
    due = {task.name: start + task.interval_s for task in tasks}
    while True:
        time.sleep(TICK_SECONDS)
        tick(context, tasks, due, time.monotonic())


def start(context: Context, tasks: tuple[Periodic, ...]) -> None:
    threading.Thread(target=_loop, args=(context, tasks), name="resync", daemon=True).start()
