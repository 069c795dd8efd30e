"""After the last phase of `labtune train`: the base model and the candidate checkpoints scored on
the run's benchmarks, the output's checkpoint chosen, and the promotion gate applied.

It runs in the trainer's own pod, with `labtune evaluate`'s code, rather than in a Job of its own:
the base model, the checkpoints and the GPUs are already there, where a second Job would queue for
GPUs again and load everything once more; and the checkpoint it chooses is the one the output is
exported from, which the trainer does next.

    <output>/evaluation/results.jsonl   every model, benchmark and question
    <output>/evaluation/summary.json    the scores per benchmark and per taxonomy leaf
"""

from __future__ import annotations

import logging
from pathlib import Path

from labtune.api.tuning_job_types import (
    METRIC_NEEDS,
    BenchmarkResult,
    ChosenCheckpoint,
    EvalScores,
    GateResult,
    GateSpec,
    Metric,
    MetricRef,
    TuningEvaluation,
)
from labtune.contract import ConfigError
from labtune.contract.evaluate import (
    EvalModel,
    EvaluateConfig,
    EvaluateSummary,
    Examples,
    from_spec,
)
from labtune.contract.train import ModelSource, TrainConfig
from labtune.trainer.dataset_reader import read_benchmark
from labtune.trainer.evaluation import evaluate
from labtune.trainer.layout import Layout, PhaseResult, checkpoint_step, complete_checkpoints
from labtune.trainer.preemption import StopRequest

log = logging.getLogger(__name__)

BASE = "base"
"""The base model's name in the evaluation; each candidate is named after its checkpoint folder."""
EVALUATION = "evaluation"
"""The evaluation's folder in the output folder."""


def lower_is_better(metric: Metric) -> bool:
    return metric == "nll"


def improvement(metric: Metric, base: float, tuned: float) -> float:
    """How much better tuned is than base (positive: better), in the metric's own unit."""
    return base - tuned if lower_is_better(metric) else tuned - base


def apply_gate(gate: GateSpec, base: EvalScores, tuned: EvalScores) -> GateResult:
    """The gate on one benchmark's scores; a ConfigError when the benchmark lacks the metric."""
    base_value, tuned_value = base.get(gate.metric), tuned.get(gate.metric)
    if base_value is None or tuned_value is None:
        raise ConfigError(
            f"evaluation.gate: benchmark {gate.benchmark} does not compute {gate.metric} ({METRIC_NEEDS})"
        )
    gained = round(improvement(gate.metric, base_value, tuned_value), 4)
    return GateResult(
        benchmark=gate.benchmark,
        metric=gate.metric,
        base=base_value,
        tuned=tuned_value,
        improvement=gained,
        min_improvement=gate.min_improvement,
        passed=gained >= gate.min_improvement,
    )


def choose(ref: MetricRef, scores: dict[str, EvalScores]) -> tuple[str, float]:
    """The best candidate (not the base) by one score: its name and value; of equals, the later
    checkpoint (trained longer at the same score)."""
    values = {name: s.get(ref.metric) for name, s in scores.items() if name != BASE}
    present = {name: value for name, value in values.items() if value is not None}
    if not present:
        raise ConfigError(
            f"evaluation.selectBy: benchmark {ref.benchmark} does not compute {ref.metric} ({METRIC_NEEDS})"
        )
    sign = -1.0 if lower_is_better(ref.metric) else 1.0
    name = max(present, key=lambda n: (sign * present[n], checkpoint_step(Path(n)) or 0))
    return name, present[name]


def candidates(config: TrainConfig, layout: Layout, last: PhaseResult) -> list[Path]:
    """The checkpoints the output may come from: with selectBy, every one the last phase kept;
    else the one of lowest held-out loss, as without evaluation."""
    phase = layout.phase(config.phases[-1].name)
    if config.evaluation.select_by is None:
        return [phase / last.best_checkpoint]
    return complete_checkpoints(phase)


def evaluate_config(config: TrainConfig, layout: Layout, checkpoints: list[Path]) -> EvaluateConfig:
    """`labtune evaluate`'s config for the base and the candidates on the run's benchmarks."""
    base = ModelSource(uri=config.base_model.uri, chat_template=config.base_model.chat_template)
    models = [EvalModel(name=BASE, base=base)]
    for checkpoint in checkpoints:
        uri = layout.uri_of(checkpoint)
        if config.method.type == "full":
            models.append(EvalModel(name=checkpoint.name, base=base.model_copy(update={"uri": uri})))
        else:
            models.append(EvalModel(name=checkpoint.name, base=base, adapter=uri))
    benchmarks = [from_spec(spec) for spec in config.evaluation.benchmarks or []]
    return EvaluateConfig(
        artifact_root=config.artifact_root,
        metrics_port=config.metrics_port,
        termination_log=config.termination_log,
        models=models,
        benchmarks=benchmarks,
        output=layout.uri_of(layout.root / EVALUATION),
        micro_batch_size=config.micro_batch_size,
    )


def read_benchmarks(config: EvaluateConfig) -> dict[str, Examples]:
    return {b.name: read_benchmark(b, config.artifact_root) for b in config.benchmarks}


def outcome(
    config: TrainConfig, layout: Layout, last: PhaseResult, checkpoints: list[Path], summary: EvaluateSummary
) -> tuple[Path, TuningEvaluation]:
    """The checkpoint to export and what status.evaluation says about the run."""
    by_name = {b.name: b for b in summary.benchmarks}
    select = config.evaluation.select_by
    if select is None:
        chosen, value, selected_by = checkpoints[0].name, last.best_eval_loss, "evalLoss"
    else:
        chosen, value = choose(select, by_name[select.benchmark].models)
        selected_by = f"{select.benchmark}/{select.metric}"
    path = next(c for c in checkpoints if c.name == chosen)
    gate = config.evaluation.gate
    evaluation = TuningEvaluation(
        benchmarks=[
            BenchmarkResult(name=b.name, examples=b.examples, base=b.models[BASE], tuned=b.models[chosen])
            for b in summary.benchmarks
        ],
        checkpoint=ChosenCheckpoint(
            phase=config.phases[-1].name,
            step=checkpoint_step(path) or 0,
            uri=layout.uri_of(path),
            selected_by=selected_by,
            value=value,
            candidates=len(checkpoints),
        ),
        gate=apply_gate(gate, by_name[gate.benchmark].models[BASE], by_name[gate.benchmark].models[chosen])
        if gate
        else None,
        summary=layout.uri_of(layout.root / EVALUATION / "summary.json"),
        seconds=summary.seconds,
    )
    return path, evaluation


def evaluate_run(
    config: TrainConfig, layout: Layout, last: PhaseResult, stop: StopRequest
) -> tuple[Path, TuningEvaluation]:
    """Scores the base and the candidates (ConfigError on bad benchmark data, Preempted when
    stopped) and returns the checkpoint to export with the evaluation for the summary."""
    checkpoints = candidates(config, layout, last)
    evaluate_with = evaluate_config(config, layout, checkpoints)
    log.info(
        "evaluating the base model and %d checkpoint(s) on %s",
        len(checkpoints),
        ", ".join(b.name for b in evaluate_with.benchmarks),
    )
    summary = evaluate(evaluate_with, read_benchmarks(evaluate_with), stop)
    path, evaluation = outcome(config, layout, last, checkpoints, summary)
    if evaluation.gate is not None:
        gate = evaluation.gate
        log.info(
            "gate on %s/%s: base %.4f, tuned %.4f, improvement %.4f (at least %.4f): %s",
            gate.benchmark,
            gate.metric,
            gate.base,
            gate.tuned,
            gate.improvement,
            gate.min_improvement,
            "passed" if gate.passed else "FAILED",
        )
    return path, evaluation
