"""kopf handlers of Taxonomy."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import kopf

from labtune.api import GROUP, VERSION, Taxonomy
from labtune.operator import metrics
from labtune.operator.conditions import now
from labtune.operator.context import Context, context_of
from labtune.operator.handlers.common import Gone, enqueue, forget, reconciliation, serialized
from labtune.operator.settings import OperatorSettings
from labtune.operator.taxonomy import reconcile_taxonomy

RESOURCE = (GROUP, VERSION, Taxonomy.plural)
# Interval ticks are checked this often; the CRD's minimum interval is 30s.
TICK_SECONDS = 15.0


def sync_once(context: Context, namespace: str, name: str) -> None:
    """One reconciliation of a Taxonomy, from a fresh read (Taxonomies are few; their sync Jobs are
    listed each time, so the interval tick sees every finished sync)."""
    with serialized("Taxonomy", namespace, name), reconciliation("Taxonomy"):
        body = context.kube.get_resource(Taxonomy, namespace, name)
        if body is None:
            raise Gone()
        changed = reconcile_taxonomy(context.kube, body, context.settings, now(), time.time())
        ready = (body.get("status") or {}).get("conditions") or []
        if changed is not None and context.recorder is not None:
            reason, message = changed
            warning = reason not in ("Synced", "Syncing")
            context.recorder.record(body, "Warning" if warning else "Normal", reason, message)
        state = (
            changed[0] if changed else next((c["reason"] for c in ready if c["type"] == "Ready"), "Syncing")
        )
        metrics.RESOURCE_STATES.set("Taxonomy", namespace, name, state)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    del settings  # the sync cadence comes from each Taxonomy's spec.interval

    # A watch-event handler, not kopf's create/update/resume: the sync due is derived from the
    # generation (level-triggered), so no diff and no kopf annotations are needed.
    @kopf.on.event(*RESOURCE, registry=registry)
    async def taxonomy_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        meta = event["object"]["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if event["type"] == "DELETED":
            forget("Taxonomy", namespace, name)
            return
        context = context_of(memo)
        enqueue(context, ("Taxonomy", namespace, name), partial(sync_once, context, namespace, name))

    @kopf.timer(*RESOURCE, interval=TICK_SECONDS, registry=registry)
    def taxonomy_tick(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        sync_once(context_of(memo), str(namespace), name)
