"""A TuningJob's evaluation: the benchmarks it scores (defaults from its SyntheticDataRun's
evaluation datasets), and the one-line account of the scores and the gate for conditions and
Events."""

from __future__ import annotations

from typing import get_args

from labtune.api.synthetic_data_run_types import GenerationOutputs
from labtune.api.tuning_job_types import (
    HELD_OUT_BENCHMARK,
    MULTIPLE_CHOICE_BENCHMARK,
    BenchmarkSpec,
    BenchmarkType,
    EvaluationSpec,
    GateResult,
    Metric,
    TuningEvaluation,
)
from labtune.operator.runs.run_reconcile import CannotRun

EVALUATED = "Evaluated"
"""The condition a TuningJob with benchmarks gets when it finishes: True once scored (reason
Scored, or GatePassed), False when the gate failed (GateFailed)."""
GATE_FAILED = "GateFailed"


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
