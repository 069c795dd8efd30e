"""`labtune train` with benchmarks on the tiny random Llama: the base and the candidates scored
after the last phase, the output exported from the checkpoint chosen by score, the gate applied;
and the choice and gate logic on fixed scores."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labtune.api.tuning_job_types import EvalScores, GateSpec, MetricRef
from labtune.contract import EXIT_CONFIG_ERROR, ConfigError
from labtune.contract.evaluate import EvaluateSummary
from labtune.contract.train import TrainSummary
from labtune.trainer.digests import SUMS
from labtune.trainer.promotion import apply_gate, choose, improvement
from labtune.trainer.trainer_cli import run

from .conftest import write_jsonl


@pytest.mark.parametrize(
    ("metric", "base", "tuned", "expected"),
    [
        ("nll", 2.0, 0.5, 1.5),
        ("nll", 0.5, 2.0, -1.5),
        ("rougeL", 0.2, 0.7, 0.5),
        ("exactMatch", 0.5, 0.25, -0.25),
        ("accuracy", 0.25, 0.75, 0.5),
        ("accuracyNorm", 0.5, 0.25, -0.25),
    ],
)
def test_improvement_is_positive_when_the_tuned_model_is_better(
    metric: Any, base: float, tuned: float, expected: float
) -> None:
    assert improvement(metric, base, tuned) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("min_improvement", "tuned_nll", "passed"),
    [(0.0, 2.0, True), (0.0, 2.0001, False), (0.5, 1.5, True), (0.5, 1.5001, False), (-0.1, 2.1, True)],
)
def test_the_gate_passes_at_the_bar_and_fails_below_it(
    min_improvement: float, tuned_nll: float, passed: bool
) -> None:
    gate = GateSpec(benchmark="held-out", metric="nll", min_improvement=min_improvement)
    result = apply_gate(gate, EvalScores(nll=2.0), EvalScores(nll=tuned_nll))
    assert (result.base, result.tuned, result.passed) == (2.0, tuned_nll, passed)
    assert result.improvement == pytest.approx(2.0 - tuned_nll, abs=1e-4)


def test_a_gate_on_a_score_the_benchmark_did_not_compute_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not compute rougeL"):
        apply_gate(GateSpec(benchmark="b", metric="rougeL"), EvalScores(nll=1.0), EvalScores(nll=0.5))


def test_the_best_candidate_wins_the_base_never_and_of_equals_the_later() -> None:
    scores = {
        "base": EvalScores(nll=0.1, rouge_l=0.9),
        "checkpoint-2": EvalScores(nll=1.0, rouge_l=0.5),
        "checkpoint-4": EvalScores(nll=0.8, rouge_l=0.5),
        "checkpoint-6": EvalScores(nll=0.9, rouge_l=0.4),
    }
    assert choose(MetricRef(benchmark="b", metric="nll"), scores) == ("checkpoint-4", 0.8)
    assert choose(MetricRef(benchmark="b", metric="rougeL"), scores) == ("checkpoint-4", 0.5)


# --- whole runs -------------------------------------------------------------------------------


@pytest.fixture
def benchmark(tmp_path: Path) -> Path:
    """Held-out questions worded unlike the training data (tiny_dataset: 'what is n plus one?')."""
    rows = [
        {
            "id": f"q{n}",
            "leaf": f"knowledge/arithmetic/{'small' if n < 3 else 'large'}/qna.yaml",
            "leafType": "knowledge",
            "question": f"add one to {n}.",
            "answer": f"{n} plus one is {n + 1}.",
        }
        for n in range(6)
    ]
    return write_jsonl(tmp_path / "evaluation.jsonl", rows)


@pytest.fixture
def one_phase(tiny_model: Path, tiny_dataset: Path, benchmark: Path) -> dict[str, Any]:
    phase = {"name": "knowledge", "dataset": "knowledge", "maxSeqLen": 64, "effectiveBatchSize": 4}
    return {
        "baseModel": {"uri": str(tiny_model)},
        "datasets": {"knowledge": str(tiny_dataset)},
        "phases": [phase | {"epochs": 2, "learningRate": 0.01}],  # 18 samples: 5 steps an epoch
        "evaluation": {
            "heldOutFraction": 0.25,
            "benchmarks": [
                {"name": "held-out", "dataset": str(benchmark), "generation": True, "maxNewTokens": 4}
            ],
        },
    }


def _summary(tmp_path: Path) -> TrainSummary:
    return TrainSummary.model_validate_json((tmp_path / "termination-log").read_text())


def test_by_default_the_lowest_eval_loss_checkpoint_is_scored_against_the_base(
    tmp_path: Path, write_config: Callable[..., Path], one_phase: dict[str, Any]
) -> None:
    assert run(write_config(**one_phase)) == 0
    summary = _summary(tmp_path)
    evaluation = summary.evaluation
    assert evaluation is not None
    assert evaluation.gate is None
    chosen = evaluation.checkpoint
    (best,) = summary.checkpoints
    assert (chosen.step, chosen.selected_by, chosen.candidates) == (best.step, "evalLoss", 1)
    assert chosen.value == best.eval_loss
    (result,) = evaluation.benchmarks
    assert (result.name, result.examples) == ("held-out", 6)
    for scores in (result.base, result.tuned):
        assert scores.nll is not None
        assert scores.nll > 0
        assert scores.exact_match is not None
        assert scores.rouge_l is not None
    assert result.base != result.tuned  # the tuned adapter changes the model
    # The evaluation's own summary: both models, and per leaf.
    written = EvaluateSummary.model_validate_json((tmp_path / "out/evaluation/summary.json").read_text())
    assert {name for b in written.benchmarks for name in b.models} == {"base", f"checkpoint-{best.step}"}
    assert [leaf.leaf for leaf in written.leaves] == [
        "knowledge/arithmetic/large/qna.yaml",
        "knowledge/arithmetic/small/qna.yaml",
    ]
    assert written.benchmarks[0].models[f"checkpoint-{best.step}"] == result.tuned
    assert evaluation.summary == f"{tmp_path / 'out'}/evaluation/summary.json"
    lines = (tmp_path / "out/evaluation/results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 6


def test_a_multiple_choice_benchmark_chooses_the_checkpoint_and_gates_by_accuracy(
    tmp_path: Path, write_config: Callable[..., Path], one_phase: dict[str, Any], choices_dataset: Path
) -> None:
    """The TuningJob's multipleChoice benchmark runs lm-eval on the base and every candidate."""
    one_phase["evaluation"]["benchmarks"].append(
        {"name": "choices", "type": "multipleChoice", "dataset": str(choices_dataset)}
    )
    one_phase["evaluation"]["selectBy"] = {"benchmark": "choices", "metric": "accuracyNorm"}
    one_phase["evaluation"]["gate"] = {"benchmark": "choices", "metric": "accuracy", "minImprovement": -1}
    assert run(write_config(**one_phase)) == 0
    evaluation = _summary(tmp_path).evaluation
    assert evaluation is not None
    held_out, choices = evaluation.benchmarks
    assert (choices.name, choices.examples) == ("choices", len(choices_dataset.read_text().splitlines()))
    for scores in (choices.base, choices.tuned):
        assert scores.accuracy is not None
        assert scores.accuracy_norm is not None
        assert scores.nll is None
    assert held_out.tuned.nll is not None
    written = EvaluateSummary.model_validate_json((tmp_path / "out/evaluation/summary.json").read_text())
    candidates = {name: s for name, s in written.benchmarks[1].models.items() if name != "base"}
    assert evaluation.checkpoint.candidates == len(candidates) > 1
    assert evaluation.checkpoint.selected_by == "choices/accuracyNorm"
    assert evaluation.checkpoint.value == max(s.accuracy_norm or 0 for s in candidates.values())
    gate = evaluation.gate
    assert gate is not None
    assert (gate.metric, gate.base, gate.tuned) == ("accuracy", choices.base.accuracy, choices.tuned.accuracy)
    assert gate.passed
    assert (tmp_path / "out/evaluation/lm-eval").is_dir()  # the task YAML, to rerun it by hand


def test_select_by_scores_every_kept_checkpoint_and_exports_the_best(
    tmp_path: Path, write_config: Callable[..., Path], one_phase: dict[str, Any]
) -> None:
    one_phase["evaluation"] |= {
        "selectBy": {"benchmark": "held-out", "metric": "nll"},
        "gate": {"benchmark": "held-out", "metric": "nll", "minImprovement": -1000.0},
    }
    assert run(write_config(**one_phase, checkpoints={"everySteps": 2, "keep": 3})) == 0
    evaluation = _summary(tmp_path).evaluation
    assert evaluation is not None
    written = EvaluateSummary.model_validate_json((tmp_path / "out/evaluation/summary.json").read_text())
    (benchmark,) = written.benchmarks
    kept = sorted(p.name for p in (tmp_path / "out/phases/knowledge").glob("checkpoint-*"))
    assert set(benchmark.models) == {"base", *kept}
    assert evaluation.checkpoint.candidates == len(kept) >= 3
    nll = {name: s.nll for name, s in benchmark.models.items() if name != "base"}
    best = min(nll, key=lambda name: (nll[name], -int(name.split("-")[1])))
    assert (f"checkpoint-{evaluation.checkpoint.step}", evaluation.checkpoint.value) == (best, nll[best])
    assert evaluation.checkpoint.selected_by == "held-out/nll"
    # The adapter is the chosen checkpoint's, byte for byte.
    chosen = tmp_path / "out/phases/knowledge" / best / "adapter_model.safetensors"
    assert (tmp_path / "out/adapter/adapter_model.safetensors").read_bytes() == chosen.read_bytes()
    assert (tmp_path / "out/adapter" / SUMS).exists()
    gate = evaluation.gate
    assert gate is not None
    assert gate.passed
    assert gate.tuned == nll[best]
    assert gate.base == benchmark.models["base"].nll


def test_a_gate_the_tuned_model_does_not_clear_is_reported_not_an_error(
    tmp_path: Path, write_config: Callable[..., Path], one_phase: dict[str, Any]
) -> None:
    one_phase["evaluation"]["benchmarks"][0]["generation"] = False
    one_phase["evaluation"]["gate"] = {"benchmark": "held-out", "metric": "nll", "minImprovement": 1000.0}
    assert run(write_config(**one_phase)) == 0  # the pod did its work; the operator fails the run
    gate = _summary(tmp_path).evaluation.gate  # type: ignore[union-attr]
    assert gate is not None
    assert not gate.passed
    assert gate.min_improvement == 1000.0
    assert gate.improvement < 1000.0
    result = _summary(tmp_path).evaluation.benchmarks[0]  # type: ignore[union-attr]
    assert result.tuned.rouge_l is None  # generation off


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"benchmarks": [{"name": "b"}]}, "evaluation.benchmarks b: set its dataset"),
        (
            {"benchmarks": [{"name": "b", "dataset": "DATA"}], "gate": {"benchmark": "c"}},
            "evaluation.gate.benchmark c is not one of evaluation.benchmarks ['b']",
        ),
        (
            {
                "benchmarks": [{"name": "b", "dataset": "DATA", "generation": False}],
                "selectBy": {"benchmark": "b", "metric": "rougeL"},
            },
            "evaluation.selectBy: benchmark b does not compute rougeL",
        ),
        (
            {"benchmarks": [{"name": "b", "dataset": "DATA"}, {"name": "b", "dataset": "DATA"}]},
            "names must be unique",
        ),
        ({"benchmarks": [{"name": "b", "dataset": "MISSING"}]}, "No such file or directory"),
        ({"benchmarks": [{"name": "b", "dataset": "EMPTY"}]}, "no examples"),
        ({"benchmarks": [{"name": "b", "dataset": "NO_ANSWER"}]}, "answer"),
        (
            {
                "benchmarks": [{"name": "b", "dataset": "DATA"}],
                "gate": {"benchmark": "b", "metric": "accuracy"},
            },
            "evaluation.gate: benchmark b does not compute accuracy (nll needs a reference benchmark",
        ),
        (
            {
                "benchmarks": [{"name": "m", "type": "multipleChoice", "dataset": "DATA"}],
                "selectBy": {"benchmark": "m", "metric": "nll"},
            },
            "benchmark m does not compute nll",
        ),
        (
            {"benchmarks": [{"name": "m", "type": "multipleChoice", "dataset": "DATA"}]},
            "evaluation.jsonl line 1: choices: Field required",
        ),
        (
            {"benchmarks": [{"name": "b", "dataset": "DATA"}], "gate": {"benchmark": "b", "metric": "judge"}},
            "evaluation.gate: benchmark b does not compute judge",
        ),
        (
            {
                "benchmarks": [
                    {
                        "name": "b",
                        "dataset": "DATA",
                        "generation": False,
                        "judge": {"endpoint": {"url": "http://judge:8000/v1", "model": "j"}},
                    }
                ]
            },
            "evaluation.benchmarks b: a judge grades generated answers: it needs type reference and "
            "generation",
        ),
    ],
)
def test_bad_benchmarks_fail_before_training_with_one_line(
    tmp_path: Path,
    write_config: Callable[..., Path],
    one_phase: dict[str, Any],
    benchmark: Path,
    evaluation: dict[str, Any],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = {
        "DATA": str(benchmark),
        "MISSING": str(tmp_path / "missing.jsonl"),
        "EMPTY": str(write_jsonl(tmp_path / "empty.jsonl", [])),
        "NO_ANSWER": str(
            write_jsonl(
                tmp_path / "no-answer.jsonl",
                [{"id": "a", "leaf": "l", "leafType": "knowledge", "question": "q?", "answer": ""}],
            )
        ),
    }
    text = json.dumps(evaluation)
    for placeholder, path in files.items():
        text = text.replace(f'"{placeholder}"', json.dumps(path))
    one_phase["evaluation"] = json.loads(text)
    assert run(write_config(**one_phase)) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("labtune train: ")
    assert message in err[0]
    assert not (tmp_path / "out/phases").exists()  # nothing trained
