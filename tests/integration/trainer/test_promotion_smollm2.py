"""`labtune train` with benchmarks on the real SmolLM2-135M-Instruct, on CPU: after training on
invented facts, questions about them worded differently from the training data are answered with
a lower NLL than the base model gives, the checkpoint is chosen by that score and the gate passes;
a learning rate too small to learn anything fails the same gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from labtune.contract.train import TrainSummary
from labtune.trainer.trainer_cli import run as labtune_train

pytestmark = pytest.mark.integration

# Invented, so the base model cannot know them.
FACTS = [
    ("Zephyr", "Heron"),
    ("Quillon", "Basalt"),
    ("Marrow", "Tansy"),
    ("Oberin", "Cobalt"),
    ("Tessaly", "Juniper"),
    ("Vantor", "Saffron"),
    ("Ilkmoor", "Pewter"),
    ("Drossel", "Lichen"),
]


def _answer(project: str, name: str) -> str:
    return f"Project {project} is code-named {name}."


def _training_record(project: str, name: str) -> dict[str, object]:
    return {
        "messages": [
            {"role": "user", "content": f"What is the code name of project {project}?"},
            {"role": "assistant", "content": _answer(project, name)},
        ]
    }


def _held_out(project: str, name: str) -> dict[str, str]:
    """Asked as nothing in the training data asks it."""
    return {
        "id": project.lower(),
        "leaf": "knowledge/projects/qna.yaml",
        "leafType": "knowledge",
        "question": f"Under which code name does the {project} project go?",
        "answer": _answer(project, name),
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("facts")
    paths = {"knowledge": folder / "facts.jsonl", "questions": folder / "evaluation.jsonl"}
    records = [_training_record(*fact) for fact in FACTS] * 2
    paths["knowledge"].write_text("".join(json.dumps(r) + "\n" for r in records))
    paths["questions"].write_text("".join(json.dumps(_held_out(*fact)) + "\n" for fact in FACTS))
    return paths


def _train(
    folder: Path, data: dict[str, Path], train_config: Callable[..., Path], learning_rate: float
) -> TrainSummary:
    phase = {"name": "knowledge", "dataset": "knowledge", "maxSeqLen": 64, "effectiveBatchSize": 4}
    config = train_config(
        folder,
        datasets={"knowledge": str(data["knowledge"])},
        phases=[phase | {"learningRate": learning_rate, "epochs": 2}],  # 8 steps
        evaluation={
            "heldOutFraction": 0.0,
            "benchmarks": [
                {"name": "held-out", "dataset": str(data["questions"]), "generation": False},
            ],
            "selectBy": {"benchmark": "held-out", "metric": "nll"},
            "gate": {"benchmark": "held-out", "metric": "nll", "minImprovement": 0.1},
        },
        checkpoints={"everySteps": 4, "keep": 2},
        mergeAdapter=False,
    )
    assert labtune_train(config) == 0
    return TrainSummary.model_validate_json((folder / "termination-log").read_text())


def test_the_tuned_model_answers_reworded_questions_better_and_passes_the_gate(
    tmp_path: Path, data: dict[str, Path], train_config: Callable[..., Path]
) -> None:
    summary = _train(tmp_path, data, train_config, learning_rate=2e-3)
    evaluation = summary.evaluation
    assert evaluation is not None
    [held_out] = evaluation.benchmarks
    assert held_out.name == "held-out"
    assert held_out.examples == len(FACTS)
    base, tuned = held_out.base.nll, held_out.tuned.nll
    assert base is not None
    assert tuned is not None
    print(f"held-out nll: base {base:.3f}, tuned {tuned:.3f}")
    assert tuned < base - 0.1, (base, tuned)
    # Both kept checkpoints were scored, and the output is the one of lowest held-out NLL.
    checkpoint = evaluation.checkpoint
    assert checkpoint.selected_by == "held-out/nll"
    assert checkpoint.candidates == 2
    assert checkpoint.value == tuned
    gate = evaluation.gate
    assert gate is not None
    assert gate.passed
    assert gate.improvement == pytest.approx(base - tuned, abs=1e-3)
    per_leaf = json.loads((tmp_path / "out" / "evaluation" / "summary.json").read_text())
    assert "knowledge/projects/qna.yaml" in json.dumps(per_leaf)
    assert Path(summary.output.adapter or "").is_dir()


def test_a_learning_rate_too_small_to_learn_fails_the_gate(
    tmp_path: Path, data: dict[str, Path], train_config: Callable[..., Path]
) -> None:
    summary = _train(tmp_path, data, train_config, learning_rate=1e-7)
    assert summary.evaluation is not None
    gate = summary.evaluation.gate
    assert gate is not None
    print(f"gate: base {gate.base:.4f}, tuned {gate.tuned:.4f}, improvement {gate.improvement:.4f}")
    assert not gate.passed
    assert abs(gate.improvement) < 0.1
