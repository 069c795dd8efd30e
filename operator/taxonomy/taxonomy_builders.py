"""What a Taxonomy sync is run with: the sync Job due now (one per spec generation and interval
tick), its config file and its children (ConfigMap, Job). Pure functions of the spec and the
settings."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from labtune.api import Taxonomy
from labtune.api.base import BatchSpec
from labtune.contract.taxonomy_sync import GitCheckout, TaxonomySyncConfig
from labtune.operator.children.child_names import (
    child_labels,
    child_metadata,
    child_name,
    default_output,
)
from labtune.operator.children.job_builders import build_config_map, build_job
from labtune.operator.children.pod_template import CONFIG_PATH, FileMount, PodRequest, build_pod_template
from labtune.operator.settings import OperatorSettings

COMPONENT = "sync"
GIT_CREDENTIALS_DIR = "/var/run/secrets/labtune/git"
# A sync is short; keep finished sync Jobs an hour for `kubectl logs`, then let them go.
SYNC_BATCH = BatchSpec(backoff_limit=2, active_deadline_seconds=900, ttl_seconds_after_finished=3600)


def _seconds(duration: str) -> float:
    """Seconds of a Go-style duration (`90s`, `5m`, `1h30m`, `1.5h`)."""
    total, number = 0.0, ""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    index = 0
    while index < len(duration):
        char = duration[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = "ms" if duration.startswith("ms", index) else char
        total += float(number) * units[unit]
        number, index = "", index + len(unit)
    return total


def sync_job_name(name: str, generation: int, interval: str | None, epoch: float) -> str:
    """The sync Job due now: one per spec generation and, with an interval, per interval tick."""
    tick = int(epoch // _seconds(interval)) if interval else 0
    digest = hashlib.sha256(f"{generation}/{tick}".encode()).hexdigest()[:8]
    return child_name(name, f"sync-{digest}")


def build_sync_config(taxonomy: Taxonomy, manifest: str, settings: OperatorSettings) -> TaxonomySyncConfig:
    git = taxonomy.spec.source.git
    ref = git.ref
    return TaxonomySyncConfig(
        artifact_root=settings.artifact_root,
        metrics_port=settings.job_metrics_port,
        git=GitCheckout(
            url=git.url,
            branch=ref.branch if ref else None,
            tag=ref.tag if ref else None,
            commit=ref.commit if ref else None,
            credentials_dir=GIT_CREDENTIALS_DIR if git.secret_ref else None,
        ),
        base=taxonomy.spec.base,
        include=taxonomy.spec.include,
        exclude=taxonomy.spec.exclude,
        manifest=manifest,
    )


def build_sync_children(
    body: Mapping[str, Any], taxonomy: Taxonomy, job_name: str, settings: OperatorSettings
) -> tuple[dict[str, Any], ...]:
    """ConfigMap and Job of one sync."""
    output = taxonomy.spec.output or default_output(body, settings.artifact_claim)
    config = build_sync_config(taxonomy, f"{output.rstrip('/')}/{job_name}/manifest.json", settings)
    secret = taxonomy.spec.source.git.secret_ref
    request = PodRequest(
        component=COMPONENT,
        image=settings.generator_image,
        args=("taxonomy", "sync", "--config", CONFIG_PATH),
        config_map=job_name,
        scheduling=taxonomy.spec.scheduling,
        artifact_uris=(output,),
        files=(FileMount("secret", secret.name, GIT_CREDENTIALS_DIR),) if secret else (),
    )
    meta = child_metadata(body, job_name, COMPONENT)
    template = build_pod_template(child_labels(body, COMPONENT), request, settings)
    return build_config_map(meta, config), build_job(meta, template, SYNC_BATCH)
