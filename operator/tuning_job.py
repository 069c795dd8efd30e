"""TuningJob: the trainer config, the trainer Job (an Indexed Job plus a headless Service and the
torchrun rendezvous across nodes), and status from the trainer's summary and metrics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, get_args

from labtune.api import SyntheticDataRun, TuningJob
from labtune.api.resource import Resource
from labtune.api.synthetic_data_run import GenerationOutputs, SyntheticDataRunStatus
from labtune.api.tuning_job import (
    HELD_OUT_BENCHMARK,
    MULTIPLE_CHOICE_BENCHMARK,
    BenchmarkSpec,
    BenchmarkType,
    EvaluationSpec,
    GateResult,
    Metric,
    TuningEvaluation,
)
from labtune.contract import metrics as m
from labtune.contract.evaluate import judge_api_key_env, judge_ca_file
from labtune.contract.train import Datasets, Distributed, ModelSource, TrainConfig, TrainSummary
from labtune.operator.jobs import build_config_map, build_headless_service, build_job
from labtune.operator.kube import Kube
from labtune.operator.naming import (
    MAX_INDEXED_JOB_NAME,
    child_labels,
    child_metadata,
    default_output,
    dns_label_name,
    selector,
    service_name,
)
from labtune.operator.podspec import CONFIG_PATH, FileMount, PodRequest, build_pod_template
from labtune.operator.runs import CannotRun, Finished, KindCondition, Plan, Waiting
from labtune.operator.scrape import Samples
from labtune.operator.settings import OperatorSettings

COMPONENT = "trainer"
RENDEZVOUS_PORT = 29500
TRAINER_GRACE_SECONDS = 300
"""After SIGTERM the trainer saves a checkpoint before it exits; Kubernetes' default 30 s is too
short for the optimizer state of a large model on a network volume."""
EVALUATED = "Evaluated"
"""The condition a TuningJob with benchmarks gets when it finishes: True once scored (reason
Scored, or GatePassed), False when the gate failed (GateFailed)."""
GATE_FAILED = "GateFailed"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


EvaluationDatasets = dict[BenchmarkType, str]
"""The SyntheticDataRun's evaluation datasets by the benchmark type that scores them."""


def evaluation_datasets(outputs: GenerationOutputs | None) -> EvaluationDatasets:
    datasets: EvaluationDatasets = {}
    if outputs and outputs.evaluation:
        datasets["reference"] = outputs.evaluation.uri
    if outputs and outputs.evaluation_choices:
        datasets["multipleChoice"] = outputs.evaluation_choices.uri
    return datasets


def default_benchmarks(datasets: EvaluationDatasets) -> list[BenchmarkSpec]:
    """With no benchmarks listed: one for each evaluation dataset the SyntheticDataRun wrote."""
    named = {"reference": HELD_OUT_BENCHMARK, "multipleChoice": MULTIPLE_CHOICE_BENCHMARK}
    return [BenchmarkSpec(name=named[kind], type=kind) for kind in named if kind in datasets]


def resolve_evaluation(spec: EvaluationSpec, datasets: EvaluationDatasets) -> EvaluationSpec | CannotRun:
    """The spec's evaluation with every benchmark's dataset named: a benchmark without one uses the
    SyntheticDataRun's evaluation dataset of its type; with no benchmarks listed, each evaluation
    dataset the run wrote is a default benchmark (see default_benchmarks)."""
    benchmarks = default_benchmarks(datasets) if spec.benchmarks is None else list(spec.benchmarks)
    names = {benchmark.name for benchmark in benchmarks}
    for field, ref in (("gate", spec.gate), ("selectBy", spec.select_by)):
        if ref is not None and ref.benchmark not in names:
            return CannotRun(
                "NoEvaluationDataset",
                f"spec.evaluation.{field} names the default benchmark {ref.benchmark}, but the "
                f"SyntheticDataRun wrote no dataset for it: {_HOW_TO_WRITE[_default_type(ref.benchmark)]}, "
                "or list benchmarks with datasets",
            )
    resolved = []
    for benchmark in benchmarks:
        if benchmark.dataset is None:
            if benchmark.type not in datasets:
                return CannotRun(
                    "NoEvaluationDataset",
                    f"benchmark {benchmark.name} has no dataset and the SyntheticDataRun wrote no "
                    f"{benchmark.type} evaluation dataset: {_HOW_TO_WRITE[benchmark.type]}, or set "
                    "the benchmark's dataset",
                )
            benchmark = benchmark.model_copy(update={"dataset": datasets[benchmark.type]})
        resolved.append(benchmark)
    return spec.model_copy(update={"benchmarks": resolved})


_HOW_TO_WRITE: dict[BenchmarkType, str] = {
    "reference": "set spec.evaluation.heldOutSeeds on it",
    "multipleChoice": "set spec.evaluation.multipleChoice on it",
}


def _default_type(name: str) -> BenchmarkType:
    return "multipleChoice" if name == MULTIPLE_CHOICE_BENCHMARK else "reference"


def build_train_config(
    job: TuningJob, datasets: Datasets, evaluation: EvaluationSpec, output: str, settings: OperatorSettings
) -> TrainConfig:
    """The trainer's config file, rendered from the spec (with the evaluation resolved)."""
    spec = job.spec
    return TrainConfig(
        artifact_root=settings.artifact_root,
        metrics_port=settings.job_metrics_port,
        base_model=ModelSource(uri=spec.base_model.uri, chat_template=spec.base_model.chat_template),
        datasets=datasets,
        method=spec.method,
        phases=spec.phases,
        evaluation=evaluation,
        checkpoints=spec.checkpoints,
        output=output,
        merge_adapter=spec.output.merge_adapter,
        # `labtune train` itself starts torchrun when there is more than one process, so that the
        # exit codes the pod failure policy reads (config error, preempted) survive the launcher.
        distributed=Distributed(
            nodes=spec.resources.nodes, procs_per_node=max(spec.resources.gpus_per_node, 1)
        ),
    )


def _rendezvous_env(job: TuningJob, job_name: str, service: str) -> tuple[dict[str, Any], ...]:
    """Across nodes, where torchrun (started by `labtune train`) meets: node 0 of the Indexed Job.
    Within one node the trainer starts torchrun standalone and needs nothing from here."""
    if job.spec.resources.nodes == 1:
        return ()
    return (
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}},
        # Pods of an Indexed Job with a subdomain resolve as <job>-<index>.<service>.
        {"name": "MASTER_ADDR", "value": f"{job_name}-0.{service}"},
        {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
    )


def _judge_credentials(config: TrainConfig) -> tuple[tuple[dict[str, Any], ...], tuple[FileMount, ...]]:
    """Each judge's API key (an env var from its Secret, the name `labtune evaluate` reads) and CA
    bundle (a Secret volume where it looks): the operator never reads either."""
    env: list[dict[str, Any]] = []
    files: list[FileMount] = []
    for benchmark in config.evaluation.benchmarks or []:
        endpoint = benchmark.judge.endpoint if benchmark.judge else None
        if endpoint and endpoint.api_key_secret_ref:
            ref = endpoint.api_key_secret_ref
            key = {"secretKeyRef": {"name": ref.name, "key": ref.key}}
            env.append({"name": judge_api_key_env(benchmark.name), "valueFrom": key})
        if endpoint and endpoint.ca_secret_ref:
            ref = endpoint.ca_secret_ref
            folder, name = judge_ca_file(benchmark.name).rsplit("/", 1)
            files.append(FileMount("secret", ref.name, folder, ((ref.key, name),)))
    return tuple(env), tuple(files)


def build_trainer_children(
    body: Mapping[str, Any], job: TuningJob, config: TrainConfig, settings: OperatorSettings
) -> tuple[dict[str, Any], ...]:
    """ConfigMap, (headless Service,) Job — the Job last, so that it never starts without its config."""
    name = dns_label_name(body["metadata"]["name"], "train", MAX_INDEXED_JOB_NAME)
    service = service_name(body["metadata"]["name"], "train")
    resources = job.spec.resources
    uris = [
        config.base_model.uri,
        config.output,
        *(u for u in (config.datasets.knowledge, config.datasets.skills) if u),
        *(b.dataset for b in config.evaluation.benchmarks or [] if b.dataset),
    ]
    distributed = resources.nodes > 1
    judge_env, judge_files = _judge_credentials(config)
    request = PodRequest(
        component=COMPONENT,
        image=settings.trainer_image,
        args=("train", "--config", CONFIG_PATH),
        config_map=name,
        scheduling=resources,
        gpus=resources.gpus_per_node,
        artifact_uris=tuple(uris),
        env=_rendezvous_env(job, name, service) + judge_env,
        files=judge_files,
        subdomain=service if distributed else None,
        grace_seconds=TRAINER_GRACE_SECONDS,
    )
    labels = child_labels(body, COMPONENT)
    meta = child_metadata(body, name, COMPONENT)
    template = build_pod_template(labels, request, settings)
    children: list[dict[str, Any]] = [build_config_map(meta, config)]
    if distributed:
        pods = selector(body["kind"], body["metadata"]["name"])
        children.append(build_headless_service({**meta, "name": service}, pods, RENDEZVOUS_PORT))
    children.append(build_job(meta, template, job.spec, completions=resources.nodes))
    return tuple(children)


def build_trainer_plan(
    body: Mapping[str, Any],
    job: TuningJob,
    datasets: Datasets,
    evaluation: EvaluationSpec,
    settings: OperatorSettings,
) -> tuple[TrainConfig, tuple[dict[str, Any], ...]]:
    """The trainer config and the children that run it, once the datasets are known."""
    output = job.spec.output.uri or default_output(body, settings.artifact_claim)
    config = build_train_config(job, datasets, evaluation, output, settings)
    return config, build_trainer_children(body, job, config, settings)


def _config_digest(config: TrainConfig) -> str:
    canonical = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()


class TuningJobKind:
    """The TuningJob's part in the shared run loop."""

    resource: type[Resource] = TuningJob

    def plan(
        self, kube: Kube, body: Mapping[str, Any], settings: OperatorSettings
    ) -> Plan | Waiting | CannotRun:
        job = TuningJob.model_validate(body)
        lineage: dict[str, Any] = {"baseModel": job.spec.base_model.uri}
        data = job.spec.data
        evaluation_data: EvaluationDatasets = {}
        if data.synthetic_data_run_ref is not None:
            found = self._datasets_from_run(
                kube, body["metadata"]["namespace"], data.synthetic_data_run_ref.name
            )
            if isinstance(found, Waiting | CannotRun):
                return found
            datasets, run_status = found
            lineage["taxonomyRevision"] = run_status.taxonomy_revision
            outputs = run_status.outputs
            used = (
                (outputs.knowledge, outputs.skills, outputs.evaluation, outputs.evaluation_choices)
                if outputs
                else ()
            )
            lineage["datasets"] = [d.to_wire() for d in used if d]
            evaluation_data = evaluation_datasets(outputs)
        else:
            datasets = Datasets(knowledge=data.knowledge, skills=data.skills)
        evaluation = resolve_evaluation(job.spec.evaluation, evaluation_data)
        if isinstance(evaluation, CannotRun):
            return evaluation
        config, children = build_trainer_plan(body, job, datasets, evaluation, settings)
        lineage["configSha256"] = _config_digest(config)
        return Plan(
            job_name=children[-1]["metadata"]["name"],
            children=children,
            pinned={"lineage": {k: v for k, v in lineage.items() if v is not None}},
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
        status: dict[str, Any] = {
            "output": parsed.output.to_wire(),
            # The summary's metrics replace what was scraped while running: the merge patch's nulls
            # remove a value the summary does not have (a run too short to log a loss has none).
            "metrics": parsed.metrics.model_dump(mode="json", by_alias=True),
            "checkpoints": [c.to_wire() for c in parsed.checkpoints],
            "progress": {"percent": 100, "step": parsed.steps, "totalSteps": parsed.steps},
            # Pods the pod failure policy replaced after a checkpoint (exit 75) are not in the Job's
            # `failed`, and a deleted pod leaves no object: the trainer counts its own starts.
            "restarts": parsed.restarts,
        }
        evaluation = parsed.evaluation
        if evaluation is None:
            return Finished(status)
        status["evaluation"] = evaluation.to_wire()
        scored = headline(evaluation)
        gate = evaluation.gate
        if gate is None:
            return Finished(
                status, note=f"; {scored}", conditions=(KindCondition(EVALUATED, True, "Scored", scored),)
            )
        if gate.passed:
            message = f"{scored}; {gate_text(gate)}: passed"
            return Finished(
                status,
                note=f"; {message}",
                conditions=(KindCondition(EVALUATED, True, "GatePassed", message),),
            )
        # Not promoted: no status.output, so nothing that deploys what a TuningJob reports picks it up.
        kept = parsed.output.adapter or parsed.output.model
        del status["output"]
        message = (
            f"the tuned model does not clear the gate and is not promoted: {gate_text(gate)} "
            f"({scored}); its output stays at {kept} for inspection"
        )
        return Finished(
            status,
            failure=(GATE_FAILED, message),
            conditions=(KindCondition(EVALUATED, False, GATE_FAILED, message),),
        )

    def gpus(self, spec: Mapping[str, Any]) -> int:
        resources = spec.get("resources") or {}
        return int(resources.get("gpusPerNode", 1)) * int(resources.get("nodes", 1))


def _number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"


def headline(evaluation: TuningEvaluation) -> str:
    """The first benchmark's first score, base → tuned, and where the output came from."""
    first = evaluation.benchmarks[0] if evaluation.benchmarks else None
    chosen = evaluation.checkpoint
    where = f"output from {chosen.phase} step {chosen.step} (by {chosen.selected_by})"
    if first is None:
        return where
    metric = next(m for m in get_args(Metric) if first.base.get(m) is not None)
    base, tuned = first.base.get(metric), first.tuned.get(metric)
    return f"{first.name} {metric} {_number(base or 0.0)} → {_number(tuned or 0.0)} (base → tuned), {where}"


def gate_text(gate: GateResult) -> str:
    return (
        f"gate {gate.benchmark}/{gate.metric} improved by {_number(gate.improvement)} "
        f"(at least {_number(gate.min_improvement)})"
    )


def progress_status(samples: Samples) -> dict[str, Any]:
    """status.progress / metrics / currentPhase from the trainer's metrics."""
    step, total = samples.get(m.TRAIN_STEP), samples.get(m.TRAIN_TOTAL_STEPS)
    progress: dict[str, Any] = {}
    if step is not None and total:
        progress = {"step": int(step), "totalSteps": int(total), "percent": min(100, int(100 * step / total))}
        progress["epoch"] = round(samples.get(m.TRAIN_EPOCH) or 0.0, 3)
        eta = samples.get(m.TRAIN_ETA_SECONDS)
        if eta is not None:
            progress["etaSeconds"] = int(eta)
    named = {
        "loss": m.TRAIN_LOSS,
        "evalLoss": m.TRAIN_EVAL_LOSS,
        "learningRate": m.TRAIN_LEARNING_RATE,
        "tokensPerSecond": m.TRAIN_TOKENS_PER_SECOND,
    }
    metrics = {key: value for key, name in named.items() if (value := samples.get(name)) is not None}
    status: dict[str, Any] = {}
    if progress:
        status["progress"] = progress
    if metrics:
        status["metrics"] = metrics
    phase = samples.labels.get(m.TRAIN_PHASE, {}).get("phase")
    if phase:
        status["currentPhase"] = phase
    return status
