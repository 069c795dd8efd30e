"""Multiple-choice accuracy through lm-evaluation-harness (run for real, HF backend) on a tiny
random-weight model, checked against a hand computation of each choice's log-likelihood."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from labtune.contract import ConfigError
from labtune.trainer.dataset_reader import read_choices
from labtune.trainer.multiple_choice import score_choices, task_config


def _loglikelihood(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, context: str, continuation: str
) -> float:
    """log P(continuation | context), tokenised as lm-eval does: the whole string, with the
    continuation's tokens being those after the context's."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(float(logprobs[i - 1, whole[i]]) for i in range(start, len(whole)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, make_model: Callable[..., Path]) -> Path:
    torch.manual_seed(0)
    return make_model(tmp_path_factory.mktemp("tiny"))


def test_accuracy_is_lm_evals_and_matches_the_log_likelihoods(
    tiny: Path, tmp_path: Path, choices_dataset: Path, choice_questions: list[tuple[str, str, list[str], int]]
) -> None:
    model = LlamaForCausalLM.from_pretrained(tiny).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    dataset = choices_dataset
    score = score_choices(model, tokenizer, dataset, tmp_path / "tasks", name="unit")

    hits: dict[str, list[bool]] = {}
    for leaf, question, choices, answer in choice_questions:
        context = f"Question: {question}\nAnswer:"
        scores = [_loglikelihood(model, tokenizer, context, f" {choice}") for choice in choices]
        hits.setdefault(leaf, []).append(max(range(len(choices)), key=scores.__getitem__) == answer)
    expected = sum(sum(h) for h in hits.values()) / len(choice_questions)
    assert score.examples == len(choice_questions)
    assert score.accuracy == pytest.approx(expected)
    assert score.per_leaf == pytest.approx({leaf: sum(h) / len(h) for leaf, h in hits.items()})
    assert 0.0 <= score.accuracy_norm <= 1.0


def test_the_task_yaml_runs_with_lm_eval_directly(
    tmp_path: Path, choices_dataset: Path, choice_questions: list[tuple[str, str, list[str], int]]
) -> None:
    """The written task is a plain lm-eval task: `lm_eval --include_path` loads it as it is."""
    from lm_eval.tasks import TaskManager

    dataset = choices_dataset
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks/labtune_mcq_direct.yaml").write_text(
        yaml.safe_dump(task_config("labtune_mcq_direct", dataset))
    )
    manager = TaskManager(include_path=str(tmp_path / "tasks"))
    assert "labtune_mcq_direct" in manager.all_tasks
    task = manager.load(["labtune_mcq_direct"])["tasks"]["labtune_mcq_direct"]
    docs = list(task.test_docs())
    assert [d["id"] for d in docs] == [f"q{i}" for i in range(len(choice_questions))]
    assert task.doc_to_choice(docs[2]) == choice_questions[2][2]
    assert task.doc_to_target(docs[2]) == 1


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"id": "a", "leaf": "l", "question": "q", "choices": ["x"], "answer": 0}', "choices"),
        ('{"id": "a", "leaf": "l", "question": "q", "choices": ["x", "y"], "answer": 2}', "not the index"),
        ('{"id": "a", "leaf": "l", "question": "", "choices": ["x", "y"], "answer": 0}', "question"),
        ("not json", "not JSON"),
        (
            '{"id": "g", "leaf": "l", "question": "q", "choices": ["x", "y"], "answer": 0}',
            "id 'g' repeats line 1",
        ),
    ],
)
def test_a_bad_line_is_named_with_its_file_and_line(tmp_path: Path, line: str, words: str) -> None:
    good = json.dumps({"id": "g", "leaf": "l", "question": "q", "choices": ["x", "y"], "answer": 1})
    path = tmp_path / "choices.jsonl"
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(ConfigError, match=rf"choices.jsonl line 2: .*{words}"):
        read_choices(path)


def test_an_empty_dataset_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "choices.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="has no multiple-choice examples"):
        read_choices(tmp_path / "choices.jsonl")
