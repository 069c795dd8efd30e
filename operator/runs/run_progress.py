"""Progress of running runs: read the job pod's /metrics and write what it says into status."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from labtune.operator.children.child_names import selector
from labtune.operator.children.job_observe import running_pods, termination_message
from labtune.operator.children.pod_metrics import Samples, scrape
from labtune.operator.machinery.context import Context
from labtune.operator.runs.run_reconcile import JOB_NAME_LABEL, RunKind, status_patch, unchanged

log = logging.getLogger(__name__)
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def _index(pod: Mapping[str, Any]) -> int:
    return int((pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX, 0))


def _finished_part(pod: Mapping[str, Any], fields: Mapping[str, str]) -> Samples | None:
    """A finished pod's part of the run, from its summary's fields."""
    message = termination_message([pod], "Succeeded")
    try:
        summary = json.loads(message or "")
    except ValueError:
        return None
    if not isinstance(summary, dict):
        return None
    return Samples({metric: float(summary[name]) for name, metric in fields.items() if name in summary})


def _parts(context: Context, kind: RunKind, pods: Sequence[Mapping[str, Any]]) -> list[Samples]:
    """The metrics of the pods that report (pod 0 alone unless every pod reports), by completion
    index; an unreachable pod is left out, the next tick tries again."""
    running = sorted(running_pods(pods), key=_index)
    parts = []
    for pod in running if kind.every_pod_reports else running[:1]:
        try:
            parts.append(scrape(pod["status"]["podIP"], context.settings.job_metrics_port))
        except (OSError, ValueError) as error:
            log.info("metrics of pod %s not readable yet: %s", pod["metadata"]["name"], error)
    if kind.every_pod_reports and parts:
        parts += [part for pod in pods if (part := _finished_part(pod, kind.summary_metrics))]
    return parts


def refresh_progress(context: Context, body: Mapping[str, Any], kind: RunKind) -> bool:
    """Scrapes the running pods and patches the status fields derived from their metrics; True when
    status changed."""
    kube = context.kube
    meta = body["metadata"]
    old = kind.status_model.model_validate(body.get("status") or {})
    job_name = old.job_name
    if not job_name:
        return False
    pods = kube.list_pods(
        meta["namespace"], {**selector(body["kind"], meta["name"]), JOB_NAME_LABEL: job_name}
    )
    parts = _parts(context, kind, pods)
    if not parts:
        return False
    fields = kind.progress(parts)
    if fields is None or unchanged(old, fields):
        return False
    # Progress fields are this timer's alone, so the write needs no precondition; the store takes
    # the result so that the next reconciliation starts from it.
    written = kube.patch_status(kind.resource, meta["namespace"], meta["name"], status_patch(fields))
    context.store.put_owner(written)
    return True
