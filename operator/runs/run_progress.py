"""Progress of running runs: read the job pod's /metrics and write what it says into status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from labtune.operator.children.child_names import selector
from labtune.operator.children.job_observe import running_pods
from labtune.operator.children.pod_metrics import scrape
from labtune.operator.machinery.context import Context
from labtune.operator.runs.run_reconcile import JOB_NAME_LABEL, RunKind, status_patch, unchanged

log = logging.getLogger(__name__)
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def _first_worker(pods: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    # Rank 0 (completion index 0 of an Indexed Job) reports for the whole run.
    return min(pods, key=lambda p: int((p["metadata"].get("annotations") or {}).get(COMPLETION_INDEX, 0)))


def refresh_progress(context: Context, body: Mapping[str, Any], kind: RunKind) -> bool:
    """Scrapes the running pod and patches the status fields derived from its metrics; True when
    status changed. An unreachable pod is not an error: the next tick tries again."""
    kube, settings = context.kube, context.settings
    meta = body["metadata"]
    old = kind.status_model.model_validate(body.get("status") or {})
    job_name = old.job_name
    if not job_name:
        return False
    pods = running_pods(
        kube.list_pods(meta["namespace"], {**selector(body["kind"], meta["name"]), JOB_NAME_LABEL: job_name})
    )
    if not pods:
        return False
    pod = _first_worker(pods)
    try:
        samples = scrape(pod["status"]["podIP"], settings.job_metrics_port)
    except (OSError, ValueError) as error:
        log.info("metrics of pod %s not readable yet: %s", pod["metadata"]["name"], error)
        return False
    fields = kind.progress(samples)
    if fields is None or unchanged(old, fields):
        return False
    # Progress fields are this timer's alone, so the write needs no precondition; the store takes
    # the result so that the next reconciliation starts from it.
    written = kube.patch_status(kind.resource, meta["namespace"], meta["name"], status_patch(fields))
    context.store.put_owner(written)
    return True
