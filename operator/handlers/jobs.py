"""kopf handlers of the child Jobs: any change of a Job labtune made reconciles its owner at once
(instead of waiting for the owner's resync timer)."""

from __future__ import annotations

from typing import Any

import kopf

from labtune.api import API_VERSION, GROUP, VERSION, Taxonomy
from labtune.operator import metrics
from labtune.operator.handlers import synthetic_data_run, taxonomy, tuning_job
from labtune.operator.handlers.common import run_once
from labtune.operator.naming import MANAGED_BY
from labtune.operator.runs import RunKind
from labtune.operator.settings import OperatorSettings

RUN_KINDS: dict[str, RunKind] = {"SyntheticDataRun": synthetic_data_run.KIND, "TuningJob": tuning_job.KIND}


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    del settings

    @kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: "labtune"}, registry=registry)
    def child_job_moved(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
        owner = next(
            (o for o in body.metadata.get("ownerReferences") or [] if o.get("apiVersion") == API_VERSION),
            None,
        )
        if owner is None:
            return
        if owner["kind"] == "Taxonomy":
            taxonomy.sync_once(memo, str(namespace), owner["name"])
        elif owner["kind"] in RUN_KINDS:
            run_once(memo, RUN_KINDS[owner["kind"]], str(namespace), owner["name"])

    @kopf.on.delete(GROUP, VERSION, Taxonomy.plural, optional=True, registry=registry)
    @kopf.on.delete(GROUP, VERSION, synthetic_data_run.KIND.resource.plural, optional=True, registry=registry)
    @kopf.on.delete(GROUP, VERSION, tuning_job.KIND.resource.plural, optional=True, registry=registry)
    def resource_deleted(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        metrics.RESOURCE_STATES.forget(body["kind"], str(namespace), name)
