"""One background thread for the whole operator (instead of a kopf timer per resource): it queues
the retries that are due and, every resync interval, lists the runs and the child Jobs afresh and
queues every run for reconciliation — the level-triggered safety net for a missed watch event or a
reconciliation that failed for good."""

from __future__ import annotations

import logging
import threading
import time

from kubernetes.client.exceptions import ApiException

from labtune.operator.context import Context
from labtune.operator.handlers.common import enqueue, run_each
from labtune.operator.handlers.jobs import RUN_KINDS
from labtune.operator.naming import MANAGED_BY

log = logging.getLogger(__name__)
RETRY_TICK_SECONDS = 1.0


def resync(context: Context) -> None:
    """Lists every child Job and run, refreshes the store and reconciles each run."""
    namespaces = context.settings.namespaces
    jobs, version = context.kube.list_all_jobs({MANAGED_BY: "labtune"}, namespaces)
    context.store.relist_jobs(jobs, version)
    for kind_name, kind in RUN_KINDS.items():
        runs, version = context.kube.list_resources(kind.resource, namespaces)
        context.store.relist(kind_name, runs, version)
        by_namespace: dict[str, list[str]] = {}
        for run in runs:
            by_namespace.setdefault(run["metadata"]["namespace"], []).append(run["metadata"]["name"])
        for namespace, names in by_namespace.items():
            run_each(context, kind, namespace, names)


def _loop(context: Context) -> None:
    interval = context.settings.resync_interval
    next_resync = time.monotonic() + interval
    while True:
        time.sleep(min(RETRY_TICK_SECONDS, max(0.0, next_resync - time.monotonic())))
        for key, again in context.retries.take_due():
            enqueue(context, key, again)
        if time.monotonic() < next_resync:
            continue
        next_resync = time.monotonic() + interval
        try:
            resync(context)
        except (ApiException, OSError) as error:
            log.warning("resync failed, trying again in %.0fs: %s", interval, error)


def start(context: Context) -> None:
    threading.Thread(target=_loop, args=(context,), name="resync", daemon=True).start()
