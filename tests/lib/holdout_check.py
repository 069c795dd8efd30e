"""Checks that the seed examples a generator run held back (`evaluation.heldOutSeeds`) reached
neither a teacher prompt nor a phase dataset; the generator's unit and integration tests use it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from labtune.contract import resolve_artifact
from labtune.contract.generate import GenerateConfig


def seed_examples(taxonomy: Path, leaf: str) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = yaml.safe_load((taxonomy / leaf).read_text())["seed_examples"]
    return examples


def seed_texts(seed: dict[str, Any]) -> list[str]:
    """Every string of a seed example: context, questions, answers."""
    texts = [seed[k] for k in ("context", "question", "answer") if k in seed]
    for qa in seed.get("questions_and_answers", []):
        texts += [qa["question"], qa["answer"]]
    return texts


def held_out_by_leaf(config: GenerateConfig) -> dict[str, Any]:
    """The run's report of the seeds it held back, by leaf."""
    report = json.loads((resolve_artifact(config.output, config.artifact_root) / "report.json").read_text())
    return {leaf["path"]: leaf for leaf in report["held_out"]}


def held_out_leaks(
    taxonomy: Path, document: str, config: GenerateConfig, prompts: Sequence[str]
) -> tuple[int, list[str]]:
    """How many held-out strings were checked, and those found in a teacher prompt or in a phase
    dataset. A held-out string that generation may show anyway (in the document or a kept seed: the
    answer "Earth." is in the document) cannot tell a leak apart and is not checked."""
    output = resolve_artifact(config.output, config.artifact_root)
    files = {
        name: (output / name).read_text(encoding="utf-8") for name in ("knowledge.jsonl", "skills.jsonl")
    }
    checked, leaks = 0, []
    for leaf, entry in held_out_by_leaf(config).items():
        seeds = seed_examples(taxonomy, leaf)
        kept = [s for i, s in enumerate(seeds) if i not in entry["seed_indexes"]]
        visible = "\n".join([document, *(t for s in kept for t in seed_texts(s))])
        for index in entry["seed_indexes"]:
            for text in seed_texts(seeds[index]):
                if text in visible:
                    continue
                checked += 1
                leaks += [f"{leaf}: a prompt shows {text!r}" for p in prompts if text in p][:1]
                # A dataset holds strings JSON-escaped, or not when written with ensure_ascii off.
                escaped = json.dumps(text)[1:-1]
                leaks += [
                    f"{leaf}: {n} holds {text!r}" for n, c in files.items() if text in c or escaped in c
                ]
    return checked, leaks
