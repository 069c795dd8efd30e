"""A SyntheticDataRun's part in the shared run loop (runs/run_reconcile.py): it waits for its
Taxonomy, pins the revision, plans the generator's children, and turns the generator's summary and
metrics into status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labtune.api import SyntheticDataRun, Taxonomy
from labtune.api.base import RunStatusBase
from labtune.api.resource import Resource
from labtune.api.synthetic_data_run_types import GenerationProgress, SyntheticDataRunStatus, TeacherModel
from labtune.api.taxonomy_types import TaxonomyStatus
from labtune.contract import metric_names as m
from labtune.contract.generate import (
    GenerateSummary,
)
from labtune.operator import conditions as cond
from labtune.operator.children.child_names import default_output
from labtune.operator.children.pod_metrics import Samples
from labtune.operator.machinery.api_client import Kube
from labtune.operator.runs.run_reconcile import Finished, Plan, Waiting
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run.synthetic_data_run_builders import (
    build_generate_config,
    build_generator_children,
    build_mix_job,
    generator_job_name,
)


class SyntheticDataRunKind:
    """The SyntheticDataRun's part in the shared run loop."""

    resource: type[Resource] = SyntheticDataRun
    status_model: type[RunStatusBase] = SyntheticDataRunStatus
    every_pod_reports = True  # each shard its own leaves
    summary_metrics: Mapping[str, str] = {
        "leavesDone": m.GENERATE_LEAVES_DONE,
        "leavesTotal": m.GENERATE_LEAVES_TOTAL,
        "samplesGenerated": m.GENERATE_SAMPLES_GENERATED,
        "samplesKept": m.GENERATE_SAMPLES_KEPT,
    }

    def plan(self, kube: Kube, body: Mapping[str, Any], settings: OperatorSettings) -> Plan | Waiting:
        run = SyntheticDataRun.model_validate(body)
        ref = run.spec.taxonomy_ref
        found = kube.get_resource(Taxonomy, body["metadata"]["namespace"], ref.name)
        if found is None:
            return Waiting("TaxonomyNotFound", f"Taxonomy {ref.name} does not exist")
        taxonomy = Taxonomy.model_validate(found)
        status = taxonomy.status or TaxonomyStatus()
        validated = cond.find(status.conditions, "Validated")
        if validated is not None and validated.status == "False":
            message = (
                f"Taxonomy {ref.name} has {status.error_count or 0} validation error(s); fix them and push"
            )
            return Waiting("TaxonomyInvalid", message, stalled=True)
        if not cond.is_true(status.conditions, "Ready") or not status.revision:
            return Waiting("WaitingForTaxonomy", f"Taxonomy {ref.name} is not Ready yet")
        revision = ref.revision or status.revision
        output = run.spec.output or default_output(body, settings.artifact_claim)
        config = build_generate_config(run, taxonomy, revision, output, settings)
        children = build_generator_children(body, run, taxonomy, config, settings)
        return Plan(
            job_name=children[-1]["metadata"]["name"],
            children=children,
            pinned=SyntheticDataRunStatus(taxonomy_revision=revision),
        )

    def next_step(
        self, kube: Kube, body: Mapping[str, Any], settings: OperatorSettings, finished_job: str
    ) -> Plan | Waiting | None:
        """The mix Job once a sharded run's generator Job succeeded. It needs the Taxonomy's spec
        (the git Secret to mount), not its state: the revision is pinned in the shards' config."""
        run = SyntheticDataRun.model_validate(body)
        if run.spec.parallelism == 1 or finished_job != generator_job_name(body, run.spec.parallelism):
            return None
        ref = run.spec.taxonomy_ref
        found = kube.get_resource(Taxonomy, body["metadata"]["namespace"], ref.name)
        if found is None:
            return Waiting(
                "TaxonomyNotFound",
                f"every shard finished, but Taxonomy {ref.name} (whose git Secret the mix step mounts) "
                "no longer exists",
                stalled=True,
            )
        output = run.spec.output or default_output(body, settings.artifact_claim)
        mix = build_mix_job(body, run, Taxonomy.model_validate(found), output, settings)
        return Plan(job_name=mix["metadata"]["name"], children=(mix,))

    def finished(self, summary: str) -> Finished:
        parsed = GenerateSummary.model_validate_json(summary)
        # The evaluation dataset alone is no result: a run that succeeds has something to train on.
        if parsed.outputs.knowledge is None and parsed.outputs.skills is None:
            raise ValueError("the summary names no dataset")
        status = SyntheticDataRunStatus(
            outputs=parsed.outputs,
            progress=GenerationProgress(
                percent=100,
                leaves_done=parsed.leaves_done,
                leaves_total=parsed.leaves_total,
                samples_generated=parsed.samples_generated,
                samples_kept=parsed.samples_kept,
            ),
            cost=parsed.cost,
        )
        cost = parsed.cost
        reused = f"; {cost.leaves_reused} of {parsed.leaves_total} leaves reused from the leaf cache"
        note = reused if cost.leaves_reused else ""
        if not parsed.failed_leaf_count:
            return Finished(status, note=note)
        status.failed_leaves = parsed.failed_leaves
        status.failed_leaf_count = parsed.failed_leaf_count
        first = parsed.failed_leaves[0] if parsed.failed_leaves else None
        detail = f"; first: {first.reason}" if first else ""
        count = parsed.failed_leaf_count
        note += f"; {count} leaf(s) produced nothing and were skipped (status.failedLeaves){detail}"
        return Finished(status, note=note)

    def gpus(self, spec: Mapping[str, Any]) -> int:
        model = (spec.get("teacher") or {}).get("model")
        return TeacherModel.model_validate(model).gpus if model else 0

    def progress(self, samples: Sequence[Samples]) -> SyntheticDataRunStatus | None:
        return progress_status(Samples.sum(samples))


def progress_status(samples: Samples) -> SyntheticDataRunStatus | None:
    """status.progress from the generator's metrics (of every shard, summed)."""
    done, total = samples.get(m.GENERATE_LEAVES_DONE), samples.get(m.GENERATE_LEAVES_TOTAL)
    if done is None or total is None:
        return None
    progress = GenerationProgress(
        percent=min(100, int(100 * done / total)) if total else 0,
        leaves_done=int(done),
        leaves_total=int(total),
        samples_generated=int(samples.get(m.GENERATE_SAMPLES_GENERATED) or 0),
        samples_kept=int(samples.get(m.GENERATE_SAMPLES_KEPT) or 0),
    )
    return SyntheticDataRunStatus(progress=progress)
