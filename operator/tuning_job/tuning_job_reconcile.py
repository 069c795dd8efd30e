"""A TuningJob's part in the shared run loop (runs/run_reconcile.py): it waits for its
SyntheticDataRun, plans the trainer's children, and turns the trainer's summary and metrics into
status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labtune.api import SyntheticDataRun, TuningJob
from labtune.api.base import RunStatusBase
from labtune.api.resource import Resource
from labtune.api.synthetic_data_run_types import SyntheticDataRunStatus
from labtune.api.tuning_job_types import (
    Lineage,
    TrainingMetrics,
    TrainingProgress,
    TrainingResources,
    TuningJobStatus,
)
from labtune.contract import metric_names as m
from labtune.contract.train import Datasets, TrainSummary
from labtune.operator.children.pod_metrics import Samples
from labtune.operator.machinery.api_client import Kube
from labtune.operator.runs.run_reconcile import (
    CannotRun,
    Finished,
    KindCondition,
    Plan,
    Waiting,
)
from labtune.operator.settings import OperatorSettings
from labtune.operator.tuning_job.tuning_job_builders import _config_digest, build_trainer_plan
from labtune.operator.tuning_job.tuning_job_evaluation import (
    EVALUATED,
    GATE_FAILED,
    EvaluationDatasets,
    evaluation_datasets,
    gate_text,
    headline,
    resolve_evaluation,
)


class TuningJobKind:
    """The TuningJob's part in the shared run loop."""

    resource: type[Resource] = TuningJob
    status_model: type[RunStatusBase] = TuningJobStatus
    every_pod_reports = False  # rank 0 reports for every node
    summary_metrics: Mapping[str, str] = {}

    def plan(
        self, kube: Kube, body: Mapping[str, Any], settings: OperatorSettings
    ) -> Plan | Waiting | CannotRun:
        job = TuningJob.model_validate(body)
        lineage = Lineage(base_model=job.spec.base_model.uri)
        data = job.spec.data
        evaluation_data: EvaluationDatasets = {}
        if data.synthetic_data_run_ref is not None:
            found = self._datasets_from_run(
                kube, body["metadata"]["namespace"], data.synthetic_data_run_ref.name
            )
            if isinstance(found, Waiting | CannotRun):
                return found
            datasets, run_status = found
            lineage.taxonomy_revision = run_status.taxonomy_revision
            outputs = run_status.outputs
            used = (
                (outputs.knowledge, outputs.skills, outputs.evaluation, outputs.evaluation_choices)
                if outputs
                else ()
            )
            lineage.datasets = [d for d in used if d]
            evaluation_data = evaluation_datasets(outputs)
        else:
            datasets = Datasets(knowledge=data.knowledge, skills=data.skills)
        evaluation = resolve_evaluation(job.spec.evaluation, evaluation_data)
        if isinstance(evaluation, CannotRun):
            return evaluation
        config, children = build_trainer_plan(body, job, datasets, evaluation, settings)
        lineage.config_sha256 = _config_digest(config)
        return Plan(
            job_name=children[-1]["metadata"]["name"],
            children=children,
            pinned=TuningJobStatus(lineage=lineage),
        )

    @staticmethod
    def _datasets_from_run(
        kube: Kube, namespace: str, name: str
    ) -> tuple[Datasets, SyntheticDataRunStatus] | Waiting | CannotRun:
        found = kube.get_resource(SyntheticDataRun, namespace, name)
        if found is None:
            return Waiting("SyntheticDataRunNotFound", f"SyntheticDataRun {name} does not exist")
        status = SyntheticDataRunStatus.model_validate(found.get("status") or {})
        if status.state == "Failed":
            # Runs are final: a failed one never produces datasets, so this run cannot either.
            ready = next((c for c in status.conditions if c.type == "Ready"), None)
            why = f": {ready.reason}: {ready.message}" if ready and ready.message else ""
            return CannotRun("SyntheticDataRunFailed", f"SyntheticDataRun {name} failed{why}")
        if status.state != "Succeeded" or status.outputs is None:
            return Waiting(
                "WaitingForSyntheticDataRun", f"SyntheticDataRun {name} is {status.state or 'Pending'}"
            )
        outputs = status.outputs
        datasets = Datasets(
            knowledge=outputs.knowledge.uri if outputs.knowledge else None,
            skills=outputs.skills.uri if outputs.skills else None,
        )
        return datasets, status

    def finished(self, summary: str) -> Finished:
        parsed = TrainSummary.model_validate_json(summary)  # pydantic's ValidationError is a ValueError
        if not (parsed.output.adapter or parsed.output.model):
            raise ValueError("the summary names no adapter and no model")
        status = TuningJobStatus(
            # The summary's metrics replace what was scraped while running: every field is set, so
            # the merge patch's nulls remove a value the summary does not have.
            metrics=TrainingMetrics.model_validate(parsed.metrics.model_dump()),
            checkpoints=parsed.checkpoints,
            progress=TrainingProgress(percent=100, step=parsed.steps, total_steps=parsed.steps),
            # Pods the pod failure policy replaced after a checkpoint (exit 75) are not in the Job's
            # `failed`, and a deleted pod leaves no object: the trainer counts its own starts.
            restarts=parsed.restarts,
        )
        evaluation = parsed.evaluation
        if evaluation is None:
            status.output = parsed.output
            return Finished(status)
        status.evaluation = evaluation
        scored = headline(evaluation)
        gate = evaluation.gate
        if gate is None or gate.passed:
            status.output = parsed.output
            reason, message = (
                ("Scored", scored) if gate is None else ("GatePassed", f"{scored}; {gate_text(gate)}: passed")
            )
            return Finished(
                status,
                note=f"; {message}",
                conditions=(KindCondition(EVALUATED, True, reason, message),),
            )
        # Not promoted: no status.output, so nothing that deploys what a TuningJob reports picks it up.
        kept = parsed.output.adapter or parsed.output.model
        message = (
            f"the tuned model does not clear the gate and is not promoted: {gate_text(gate)} "
            f"({scored}); its output stays at {kept} for inspection"
        )
        return Finished(
            status,
            failure=(GATE_FAILED, message),
            conditions=(KindCondition(EVALUATED, False, GATE_FAILED, message),),
        )

    def next_step(
        self, kube: Kube, body: Mapping[str, Any], settings: OperatorSettings, finished_job: str
    ) -> None:
        return None  # one Job: training and evaluation run in the same pods

    def gpus(self, spec: Mapping[str, Any]) -> int:
        # The model's defaults, not repeated here: an omitted gpusPerNode is the spec's default.
        resources = TrainingResources.model_validate(spec.get("resources") or {})
        return resources.gpus_per_node * resources.nodes

    def progress(self, samples: Sequence[Samples]) -> TuningJobStatus | None:
        return progress_status(samples[0])


def progress_status(samples: Samples) -> TuningJobStatus | None:
    """status.progress / metrics / currentPhase from the trainer's metrics."""
    status = TuningJobStatus()
    step, total = samples.get(m.TRAIN_STEP), samples.get(m.TRAIN_TOTAL_STEPS)
    if step is not None and total:
        eta = samples.get(m.TRAIN_ETA_SECONDS)
        status.progress = TrainingProgress(
            step=int(step),
            total_steps=int(total),
            percent=min(100, int(100 * step / total)),
            epoch=round(samples.get(m.TRAIN_EPOCH) or 0.0, 3),
            **({"eta_seconds": int(eta)} if eta is not None else {}),
        )
    named = {
        "loss": m.TRAIN_LOSS,
        "eval_loss": m.TRAIN_EVAL_LOSS,
        "learning_rate": m.TRAIN_LEARNING_RATE,
        "tokens_per_second": m.TRAIN_TOKENS_PER_SECOND,
    }
    scraped = {field: value for field, name in named.items() if (value := samples.get(name)) is not None}
    if scraped:
        status.metrics = TrainingMetrics(**scraped)
    phase = samples.labels.get(m.TRAIN_PHASE, {}).get("phase")
    if phase:
        status.current_phase = phase
    return status if status.model_fields_set else None
