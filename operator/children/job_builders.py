"""batch/v1 Jobs (and what they need: the config ConfigMap, the headless Service of an Indexed
Job) with the batch semantics of the resource that owns them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from labtune.api.base import BatchSpec
from labtune.contract import EXIT_CONFIG_ERROR, EXIT_PREEMPTED, ContractModel
from labtune.operator.children.child_names import KUEUE_QUEUE
from labtune.operator.children.pod_template import CONFIG_FILE, MAIN_CONTAINER

# libyaml's emitter where PyYAML has it (its wheels do): the pure-Python one took an eighth of the
# operator's CPU per run started.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# A configuration error cannot be fixed by retrying; a pod that was preempted or stopped by SIGTERM
# after saving its state should be replaced without using up the retry budget.
POD_FAILURE_POLICY = {
    "rules": [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": MAIN_CONTAINER, "operator": "In", "values": [EXIT_CONFIG_ERROR]},
        },
        {
            "action": "Ignore",
            "onExitCodes": {"containerName": MAIN_CONTAINER, "operator": "In", "values": [EXIT_PREEMPTED]},
        },
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
}


def build_config_map(metadata: Mapping[str, Any], config: ContractModel) -> dict[str, Any]:
    """The ConfigMap holding a pod's config file."""
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(metadata), "data": {CONFIG_FILE: text}}


def build_job(
    metadata: Mapping[str, Any],
    template: Mapping[str, Any],
    batch: BatchSpec | None,
    *,
    completions: int = 1,
    retries_per_index: bool = False,
) -> dict[str, Any]:
    """A Job running the pod template; more than one completion makes it an Indexed Job whose pods
    all run at once (one per node of a distributed run, or one per shard). `retries_per_index`:
    each index has the whole backoff limit and a failing one is retried alone (the others go on);
    otherwise the limit counts every pod's failures."""
    spec: dict[str, Any] = {
        "template": dict(template),
        "completions": completions,
        "parallelism": completions,
        "podFailurePolicy": POD_FAILURE_POLICY,
        "podReplacementPolicy": "Failed",  # never two trainers writing the same checkpoint
    }
    if completions > 1:
        spec["completionMode"] = "Indexed"
    if batch is not None:
        # A Job for a Kueue LocalQueue starts suspended: Kueue admits it by unsuspending it.
        spec["suspend"] = batch.suspend or KUEUE_QUEUE in (metadata.get("labels") or {})
        if retries_per_index and completions > 1:
            spec["backoffLimitPerIndex"] = batch.backoff_limit  # backoffLimit: unlimited then
        else:
            spec["backoffLimit"] = batch.backoff_limit
        if batch.active_deadline_seconds is not None:
            spec["activeDeadlineSeconds"] = batch.active_deadline_seconds
        if batch.ttl_seconds_after_finished is not None:
            spec["ttlSecondsAfterFinished"] = batch.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": dict(metadata), "spec": spec}


def build_headless_service(
    metadata: Mapping[str, Any], selector: Mapping[str, str], port: int
) -> dict[str, Any]:
    """The Service that gives each pod of an Indexed Job a DNS name (<job>-<index>.<service>)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": dict(metadata),
        "spec": {
            "clusterIP": "None",
            "selector": dict(selector),
            "publishNotReadyAddresses": True,  # rendezvous happens before any pod is ready
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port}],
        },
    }
