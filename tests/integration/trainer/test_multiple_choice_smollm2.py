"""lm-evaluation-harness scoring the real SmolLM2-135M-Instruct on a generated multiple-choice
task (HF backend, on CPU), through `labtune evaluate` and through the scorer itself: the task
labtune writes is the one lm-eval runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from labtune.contract.evaluate import ChoiceExample, EvaluateSummary
from labtune.trainer.modeling import load_model, load_tokenizer
from labtune.trainer.multiple_choice import score_choices

# Questions a 135M model answers, against choices no language model prefers.
EASY = [
    ("What is the capital of France?", ["Paris", "Banana", "Seventeen", "Blue"]),
    ("What colour is the sky on a clear day?", ["Blue", "Triangle", "Monday", "Seven"]),
    ("How many days are in a week?", ["Seven", "Purple", "Carrot", "London"]),
    ("What do bees make?", ["Honey", "Bicycles", "Granite", "Thursday"]),
    ("Which animal says meow?", ["A cat", "A volcano", "A spoon", "A cloud"]),
    ("What is frozen water called?", ["Ice", "Sand", "Wool", "Smoke"]),
]


def test_labtune_evaluate_scores_the_real_model_with_lm_eval(smollm2: Path, tmp_path: Path) -> None:
    """`labtune evaluate --config` as the pod runs it, with a multipleChoice benchmark."""
    dataset = tmp_path / "choices.jsonl"
    dataset.write_text(
        "".join(
            ChoiceExample(
                id=f"e{i}", leaf=f"knowledge/general/{i % 2}/qna.yaml", question=q, choices=c, answer=0
            ).model_dump_json()
            + "\n"
            for i, (q, c) in enumerate(EASY)
        )
    )
    config = {
        "metricsPort": 0,
        "terminationLog": str(tmp_path / "termination-log"),
        "output": str(tmp_path / "out"),
        "models": [{"name": "base", "base": {"uri": str(smollm2)}}],
        "benchmarks": [{"type": "multipleChoice", "name": "smollm2", "dataset": str(dataset)}],
    }
    (tmp_path / "evaluate.yaml").write_text(yaml.safe_dump(config))
    labtune = str(Path(sys.executable).parent / "labtune")
    subprocess.run([labtune, "evaluate", "--config", str(tmp_path / "evaluate.yaml")], check=True)
    summary = EvaluateSummary.model_validate_json((tmp_path / "termination-log").read_text())
    [benchmark] = summary.benchmarks
    accuracy = benchmark.models["base"].accuracy
    assert benchmark.examples == len(EASY)
    assert accuracy is not None
    assert accuracy >= 5 / 6, summary
    assert [leaf.leaf for leaf in summary.leaves] == [
        "knowledge/general/0/qna.yaml",
        "knowledge/general/1/qna.yaml",
    ]
    assert (tmp_path / "out/lm-eval/labtune_mcq_smollm2.yaml").is_file()


def test_the_right_answer_wins_wherever_it_stands(smollm2: Path, tmp_path: Path) -> None:
    """The score follows the answer, not its position (a scorer reading the first choice would pass
    the test above)."""
    dataset = tmp_path / "choices.jsonl"
    dataset.write_text(
        "".join(
            ChoiceExample(
                id=f"e{i}", leaf="knowledge/general/qna.yaml", question=q, choices=c[1:] + c[:1], answer=3
            ).model_dump_json()
            + "\n"
            for i, (q, c) in enumerate(EASY)
        )
    )
    model = load_model(smollm2).eval()
    score = score_choices(model, load_tokenizer(smollm2, None), dataset, tmp_path / "tasks", name="moved")
    assert score.accuracy >= 5 / 6, score
