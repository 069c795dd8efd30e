"""lm-evaluation-harness scoring the real SmolLM2-135M-Instruct on a generated multiple-choice
task (HF backend, on CPU): the task labtune writes is the one lm-eval runs."""

from __future__ import annotations

from pathlib import Path

from labtune.contract.evaluate import ChoiceExample
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


def test_lm_eval_scores_the_real_model_on_a_labtune_task(smollm2: Path, tmp_path: Path) -> None:
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
    model = load_model(smollm2).eval()
    tokenizer = load_tokenizer(smollm2, None)
    score = score_choices(model, tokenizer, dataset, tmp_path / "tasks", name="smollm2")
    assert score.examples == len(EASY)
    assert score.accuracy >= 5 / 6, score
    assert set(score.per_leaf) == {"knowledge/general/0/qna.yaml", "knowledge/general/1/qna.yaml"}
    assert (tmp_path / "tasks/labtune_mcq_smollm2.yaml").is_file()


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
