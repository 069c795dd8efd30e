"""kopf handlers of TuningJob."""

from __future__ import annotations

from typing import Any

import kopf

from labtune.api import GROUP, VERSION, SyntheticDataRun, TuningJob
from labtune.operator.context import context_of
from labtune.operator.handlers.common import on_run_event, reconciliation, run_each
from labtune.operator.progress import refresh_progress
from labtune.operator.settings import OperatorSettings
from labtune.operator.tuning_job import TuningJobKind, progress_status

KIND = TuningJobKind()
RESOURCE = (GROUP, VERSION, TuningJob.plural)


def _running(status: Any, **_: Any) -> bool:
    return bool(status.get("state") == "Running")


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    # A watch-event handler, not kopf's create/update/resume: level-triggered reconciliation needs
    # no diff, and so kopf writes no progress or last-handled-configuration annotations (one patch
    # and one more watch event per resource saved). Async: it only stores the body and queues the
    # reconciliation for the worker threads (see workqueue).
    @kopf.on.event(*RESOURCE, registry=registry)
    async def tuningjob_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        on_run_event(context_of(memo), KIND, event)

    @kopf.timer(*RESOURCE, interval=settings.scrape_interval, when=_running, registry=registry)
    def tuningjob_progress(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        with reconciliation("TuningJob"):
            refresh_progress(context_of(memo), body, TuningJob, progress_status)

    @kopf.on.event(GROUP, VERSION, SyntheticDataRun.plural, registry=registry)
    async def syntheticdatarun_moved(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        """A SyntheticDataRun changed: release (or fail) the TuningJobs waiting for it."""
        context = context_of(memo)
        run_each(context, KIND, str(namespace), context.store.dependents("TuningJob", str(namespace), name))
