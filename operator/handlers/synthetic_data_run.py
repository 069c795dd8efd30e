"""kopf handlers of SyntheticDataRun."""

from __future__ import annotations

from typing import Any

import kopf

from labtune.api import GROUP, VERSION, SyntheticDataRun, Taxonomy
from labtune.operator.handlers.common import kube_of, reconciliation, run_once, settings_of
from labtune.operator.progress import refresh_progress
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run import SyntheticDataRunKind, progress_status

KIND = SyntheticDataRunKind()
RESOURCE = (GROUP, VERSION, SyntheticDataRun.plural)


def _running(status: Any, **_: Any) -> bool:
    return bool(status.get("state") == "Running")


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    def syntheticdatarun_changed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        run_once(memo, KIND, str(namespace), name)

    @kopf.timer(*RESOURCE, interval=settings.resync_interval, registry=registry)
    def syntheticdatarun_resync(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        run_once(memo, KIND, str(namespace), name)

    @kopf.timer(*RESOURCE, interval=settings.scrape_interval, when=_running, registry=registry)
    def syntheticdatarun_progress(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        with reconciliation("SyntheticDataRun"):
            refresh_progress(kube_of(memo), body, SyntheticDataRun, settings_of(memo), progress_status)

    @kopf.index(*RESOURCE, registry=registry)
    def syntheticdataruns_by_taxonomy(spec: kopf.Spec, name: str, namespace: str | None, **_: Any) -> object:
        return {(namespace, spec["taxonomyRef"]["name"]): name}

    @kopf.on.event(GROUP, VERSION, Taxonomy.plural, registry=registry)
    def taxonomy_moved(name: str, namespace: str | None, memo: Any, **kwargs: Any) -> None:
        """A Taxonomy changed: release (or stall) the SyntheticDataRuns waiting for it."""
        index: kopf.Index[tuple[str | None, str], str] = kwargs["syntheticdataruns_by_taxonomy"]
        for dependent in index.get((namespace, name), []):
            run_once(memo, KIND, str(namespace), dependent)
