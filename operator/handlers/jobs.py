"""kopf handlers of the child Jobs: every change of a Job labtune made is kept in the store and
reconciles its owner at once (instead of waiting for the resync)."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import kopf

from labtune.api import API_VERSION
from labtune.operator.context import context_of
from labtune.operator.handlers import synthetic_data_run, taxonomy, tuning_job
from labtune.operator.handlers.common import enqueue, run_once
from labtune.operator.naming import MANAGED_BY
from labtune.operator.runs import RunKind
from labtune.operator.settings import OperatorSettings

RUN_KINDS: dict[str, RunKind] = {"SyntheticDataRun": synthetic_data_run.KIND, "TuningJob": tuning_job.KIND}


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    del settings

    # async, like every watch-event handler here: it only updates the store and queues work.
    @kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: "labtune"}, registry=registry)
    async def child_job_moved(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        context = context_of(memo)
        job = cast(dict[str, Any], event["object"])
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        if event["type"] == "DELETED":
            context.store.drop_job(namespace, name)
        else:
            context.store.put_job(job)
        owner = next(
            (o for o in job["metadata"].get("ownerReferences") or [] if o.get("apiVersion") == API_VERSION),
            None,
        )
        if owner is None:
            return
        kind, owner_name = owner["kind"], owner["name"]
        if kind == "Taxonomy":
            enqueue(
                context,
                (kind, namespace, owner_name),
                partial(taxonomy.sync_once, context, namespace, owner_name),
            )
        elif kind in RUN_KINDS:
            enqueue(
                context,
                (kind, namespace, owner_name),
                partial(run_once, context, RUN_KINDS[kind], namespace, owner_name),
            )
