"""kopf handlers the two run kinds (SyntheticDataRun, TuningJob) share: their watch events queue a
reconciliation, a timer reads a running pod's progress, and a change of the resource a run waits
for (its Taxonomy, its SyntheticDataRun) releases the runs waiting on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from labtune.api import GROUP, VERSION
from labtune.api.resource import Resource
from labtune.operator.context import context_of
from labtune.operator.handlers.common import on_run_event, reconciliation, run_each
from labtune.operator.progress import refresh_progress
from labtune.operator.runs import RunKind
from labtune.operator.scrape import Samples
from labtune.operator.settings import OperatorSettings


def _running(status: Any, **_: Any) -> bool:
    return bool(status.get("state") == "Running")


def register_run(
    registry: kopf.OperatorRegistry,
    settings: OperatorSettings,
    kind: RunKind,
    progress_status: Callable[[Samples], dict[str, Any]],
    waits_for: type[Resource],
) -> None:
    resource, kind_name = kind.resource, kind.resource.kind_name()
    prefix = kind_name.lower()

    # A watch-event handler, not kopf's create/update/resume: level-triggered reconciliation needs
    # no diff, and so kopf writes no progress or last-handled-configuration annotations (one patch
    # and one more watch event per resource saved). Async: it only stores the body and queues the
    # reconciliation for the worker threads (see workqueue).
    @kopf.on.event(GROUP, VERSION, resource.plural, id=f"{prefix}_event", registry=registry)
    async def run_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        on_run_event(context_of(memo), kind, event)

    @kopf.timer(
        GROUP,
        VERSION,
        resource.plural,
        id=f"{prefix}_progress",
        interval=settings.scrape_interval,
        when=_running,
        registry=registry,
    )
    def run_progress(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        with reconciliation(kind_name):
            refresh_progress(context_of(memo), body, resource, progress_status)

    @kopf.on.event(
        GROUP, VERSION, waits_for.plural, id=f"{waits_for.kind_name().lower()}_moved", registry=registry
    )
    async def dependency_moved(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        """The resource runs wait for changed: release (or stall) the runs waiting on it."""
        context = context_of(memo)
        run_each(context, kind, str(namespace), context.store.dependents(kind_name, str(namespace), name))
