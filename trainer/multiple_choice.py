"""Multiple-choice accuracy by log-likelihood through lm-evaluation-harness (InstructLab's
MMLU-branch): the dataset becomes a custom lm-eval task, whose YAML is written next to the results
so that `lm_eval --include_path <folder> --tasks <name>` runs the same task, and lm-eval's HF backend
scores the model already in memory (an adapter over its base included). lm-eval does the scoring;
labtune only writes the task and reads the per-example results back, per leaf."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel

from labtune.contract.evaluate import ChoiceExample
from labtune.trainer.dataset_reader import read_choices

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from labtune.trainer.scoring import Model

TASK_PREFIX = "labtune_mcq_"
# The question, then each choice as its continuation (lm-eval puts a space before it), as ARC and
# the MMLU-branch tasks of InstructLab do; acc_norm divides by the choice's length in bytes.
_DOC_TO_TEXT = "Question: {{question}}\nAnswer:"


class MultipleChoiceScore(BaseModel):
    """lm-eval's accuracy on one dataset, overall and per leaf."""

    task: str
    examples: int
    accuracy: float
    accuracy_norm: float
    per_leaf: dict[str, float]
    """Accuracy of each leaf's questions."""
    correct: list[bool]
    """Each question's verdict, in the dataset's order."""
    correct_norm: list[bool]
    """The same by length-normalised log-likelihood."""


def task_config(name: str, dataset: Path) -> dict[str, Any]:
    """The lm-eval task for a dataset of ChoiceExample records (JSONL, read by lm-eval's `json`
    loader from the local file)."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(dataset)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": _DOC_TO_TEXT,
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def write_task(dataset: Path, folder: Path, name: str) -> Path:
    """Writes the task YAML into `folder` (lm-eval's include path) and returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task_config(name, dataset), sort_keys=False))
    return path


def score_choices(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Path,
    folder: Path,
    *,
    name: str,
    batch_size: int = 8,
) -> MultipleChoiceScore:
    """lm-eval's accuracy of `model` (an adapter over its base as it is active now) on the
    dataset, with the task written to `folder`."""
    examples = read_choices(dataset)  # a bad line fails here, in words, not inside lm-eval
    task = f"{TASK_PREFIX}{name}"
    write_task(dataset, folder, task)
    # A pod reaches no hub; lm-eval and datasets must not try (the data are local files).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    # lm-eval ships no type information.
    from lm_eval import simple_evaluate  # type: ignore[import-untyped]
    from lm_eval.models.huggingface import HFLM  # type: ignore[import-untyped]
    from lm_eval.tasks import TaskManager  # type: ignore[import-untyped]

    lm = HFLM(pretrained=model, tokenizer=tokenizer, device=str(model.device), batch_size=batch_size)
    results = simple_evaluate(
        model=lm,
        tasks=[task],
        # Only this task: indexing lm-eval's own thousands of task YAMLs took 5.1 s per scoring
        # here, more than scoring 24 questions on SmolLM2 (3.7 s; benchmarks/evaluation_scores.py).
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,  # no standard errors: they cost more than the scoring on small sets
    )
    if results is None:  # only on a non-zero rank of a distributed run, which this never is
        raise RuntimeError("lm-eval returned no results")
    return _score(task, results, examples)


def _score(task: str, results: dict[str, Any], examples: list[ChoiceExample]) -> MultipleChoiceScore:
    by_doc = {sample["doc_id"]: sample for sample in results["samples"][task]}
    correct = [bool(by_doc[index]["acc"]) for index in range(len(examples))]
    by_leaf: defaultdict[str, list[bool]] = defaultdict(list)
    for example, hit in zip(examples, correct, strict=True):
        by_leaf[example.leaf].append(hit)
    metrics = results["results"][task]
    return MultipleChoiceScore(
        task=task,
        examples=len(examples),
        accuracy=float(metrics["acc,none"]),
        accuracy_norm=float(metrics["acc_norm,none"]),
        per_leaf={leaf: sum(hits) / len(hits) for leaf, hits in sorted(by_leaf.items())},
        correct=correct,
        correct_norm=[bool(by_doc[index]["acc_norm"]) for index in range(len(examples))],
    )
