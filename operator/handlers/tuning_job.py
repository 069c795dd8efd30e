"""kopf handlers of TuningJob."""

from __future__ import annotations

from typing import Any

import kopf

from labtune.api import GROUP, VERSION, SyntheticDataRun, TuningJob
from labtune.operator.handlers.common import kube_of, reconciliation, run_once, settings_of
from labtune.operator.progress import refresh_progress
from labtune.operator.settings import OperatorSettings
from labtune.operator.tuning_job import TuningJobKind, progress_status

KIND = TuningJobKind()
RESOURCE = (GROUP, VERSION, TuningJob.plural)


def _running(status: Any, **_: Any) -> bool:
    return bool(status.get("state") == "Running")


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    def tuningjob_changed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        run_once(memo, KIND, str(namespace), name)

    @kopf.timer(*RESOURCE, interval=settings.resync_interval, registry=registry)
    def tuningjob_resync(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        run_once(memo, KIND, str(namespace), name)

    @kopf.timer(*RESOURCE, interval=settings.scrape_interval, when=_running, registry=registry)
    def tuningjob_progress(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        with reconciliation("TuningJob"):
            refresh_progress(kube_of(memo), body, TuningJob, settings_of(memo), progress_status)

    @kopf.index(*RESOURCE, registry=registry)
    def tuningjobs_by_run(spec: kopf.Spec, name: str, namespace: str | None, **_: Any) -> object:
        ref = (spec.get("data") or {}).get("syntheticDataRunRef")
        return {(namespace, ref["name"]): name} if ref else {}

    @kopf.on.event(GROUP, VERSION, SyntheticDataRun.plural, registry=registry)
    def syntheticdatarun_moved(name: str, namespace: str | None, memo: Any, **kwargs: Any) -> None:
        """A SyntheticDataRun changed: release (or fail) the TuningJobs waiting for it."""
        index: kopf.Index[tuple[str | None, str], str] = kwargs["tuningjobs_by_run"]
        for dependent in index.get((namespace, name), []):
            run_once(memo, KIND, str(namespace), dependent)
