"""kopf handlers of SyntheticDataRun."""

from __future__ import annotations

from typing import Any

import kopf

from labtune.api import GROUP, VERSION, SyntheticDataRun, Taxonomy
from labtune.operator.context import context_of
from labtune.operator.handlers.common import on_run_event, reconciliation, run_each
from labtune.operator.progress import refresh_progress
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run import SyntheticDataRunKind, progress_status

KIND = SyntheticDataRunKind()
RESOURCE = (GROUP, VERSION, SyntheticDataRun.plural)


def _running(status: Any, **_: Any) -> bool:
    return bool(status.get("state") == "Running")


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    # A watch-event handler (see the TuningJob's): no kopf annotations, no diffs needed.
    @kopf.on.event(*RESOURCE, registry=registry)
    async def syntheticdatarun_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        on_run_event(context_of(memo), KIND, event)

    @kopf.timer(*RESOURCE, interval=settings.scrape_interval, when=_running, registry=registry)
    def syntheticdatarun_progress(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        with reconciliation("SyntheticDataRun"):
            refresh_progress(context_of(memo), body, SyntheticDataRun, progress_status)

    @kopf.on.event(GROUP, VERSION, Taxonomy.plural, registry=registry)
    async def taxonomy_moved(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        """A Taxonomy changed: release (or stall) the SyntheticDataRuns waiting for it."""
        context = context_of(memo)
        run_each(
            context, KIND, str(namespace), context.store.dependents("SyntheticDataRun", str(namespace), name)
        )
