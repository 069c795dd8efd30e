"""kopf handlers of Taxonomy."""

from __future__ import annotations

import time
from typing import Any, cast

import kopf

from labtune.api import GROUP, VERSION, Taxonomy
from labtune.operator import metrics
from labtune.operator.conditions import now
from labtune.operator.handlers.common import current, kube_of, reconciliation, serialized, settings_of
from labtune.operator.settings import OperatorSettings
from labtune.operator.taxonomy import reconcile_taxonomy

RESOURCE = (GROUP, VERSION, Taxonomy.plural)
# Interval ticks are checked this often; the CRD's minimum interval is 30s.
TICK_SECONDS = 15.0


def sync_once(memo: Any, namespace: str, name: str) -> None:
    with serialized("Taxonomy", namespace, name), reconciliation("Taxonomy"):
        body = current(memo, Taxonomy, namespace, name)
        changed = reconcile_taxonomy(kube_of(memo), body, settings_of(memo), now(), time.time())
        ready = (body.get("status") or {}).get("conditions") or []
        if changed is not None:
            reason, message = changed
            warning = reason not in ("Synced", "Syncing")
            kopf.event(
                cast(kopf.Body, body), type="Warning" if warning else "Normal", reason=reason, message=message
            )
        state = (
            changed[0] if changed else next((c["reason"] for c in ready if c["type"] == "Ready"), "Syncing")
        )
        metrics.RESOURCE_STATES.set("Taxonomy", namespace, name, state)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    del settings  # the sync cadence comes from each Taxonomy's spec.interval

    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    def taxonomy_changed(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        sync_once(memo, str(namespace), name)

    @kopf.timer(*RESOURCE, interval=TICK_SECONDS, registry=registry)
    def taxonomy_tick(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        sync_once(memo, str(namespace), name)
