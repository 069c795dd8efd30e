"""Seed examples held back from the teacher as an evaluation dataset (`evaluation.heldOutSeeds`):
chosen per leaf (seeded by `scale.seed` and the leaf's path) and taken out of the leaf before its
seed rows are built, so no prompt ever shows them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from labtune.api.synthetic_data_run_types import HoldOutSpec
from labtune.contract import ConfigError
from labtune.contract.common import LeafType
from labtune.contract.evaluate import EvalExample
from labtune.contract.records import record_id
from labtune.generator.seeds import KnowledgeSeed, SkillSeed


class HeldOutLeaf(BaseModel):
    """One leaf's held-out seed examples, as the report lists them."""

    path: str
    seed_indexes: list[int]
    """Positions in the leaf's `seed_examples`, from 0."""
    ids: list[str]
    """The EvalExample ids they became."""


@dataclass(frozen=True)
class HoldOut:
    """A leaf split for evaluation: what generation may see, and what it must not."""

    contents: dict[str, Any]
    """The leaf's qna.yaml without the held-out seed examples."""
    seed_indexes: tuple[int, ...]
    examples: list[EvalExample]

    def report(self, path: str) -> HeldOutLeaf:
        return HeldOutLeaf(path=path, seed_indexes=list(self.seed_indexes), ids=[e.id for e in self.examples])


def setting(spec: HoldOutSpec) -> str:
    """The setting in force, as a user wrote it."""
    if spec.held_out_seed_fraction is not None:
        return f"evaluation.heldOutSeedFraction {spec.held_out_seed_fraction:g}"
    return f"evaluation.heldOutSeeds {spec.held_out_seeds}"


def held_out_count(spec: HoldOutSpec, seeds: int) -> int:
    """Seed examples to hold back from a leaf that has `seeds` of them."""
    if spec.held_out_seed_fraction is not None:
        # Rounded down (the epsilon keeps 0.29 x 100 at 29), but at least one from every leaf.
        return max(1, math.floor(spec.held_out_seed_fraction * seeds + 1e-9))
    return spec.held_out_seeds


def seed_examples(contents: dict[str, Any]) -> list[Any]:
    examples = contents.get("seed_examples")
    return examples if isinstance(examples, list) else []


def choose(seed: int, path: str, seeds: int, count: int) -> tuple[int, ...]:
    """The positions held back: the same for the same seed and leaf, independent of other leaves."""
    if count <= 0:
        return ()
    return tuple(sorted(random.Random(f"{seed}/{path}").sample(range(seeds), count)))


def _example(
    path: str, leaf_type: LeafType, where: str, question: str, answer: str, context: str | None
) -> EvalExample:
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        raise ConfigError(
            f"leaf {path}: seed example {where} has an empty question or answer: it cannot be held out"
        )
    context = context.strip() if context else None
    return EvalExample(
        id=record_id("evaluation", path, where, question, answer, context or ""),
        leaf=path,
        leaf_type=leaf_type,
        question=question,
        answer=answer,
        context=context or None,
    )


def hold_out(path: str, leaf_type: LeafType, contents: dict[str, Any], indexes: tuple[int, ...]) -> HoldOut:
    """The leaf without the seed examples at `indexes`, and the evaluation questions they make:
    one per question/answer pair of a knowledge seed (closed-book: the context stays out, the model
    must have learnt the document), one per skill seed (a grounded skill keeps its context)."""
    seeds = seed_examples(contents)
    examples: list[EvalExample] = []
    for index in indexes:
        if leaf_type == "knowledge":
            knowledge = KnowledgeSeed.model_validate(seeds[index])
            for pair, qa in enumerate(knowledge.questions_and_answers):
                examples.append(_example(path, leaf_type, f"{index}.{pair}", qa.question, qa.answer, None))
        else:
            skill = SkillSeed.model_validate(seeds[index])
            context = skill.context if leaf_type == "grounded_skill" else None
            examples.append(_example(path, leaf_type, str(index), skill.question, skill.answer, context))
    held = set(indexes)
    kept = [s for i, s in enumerate(seeds) if i not in held]
    return HoldOut({**contents, "seed_examples": kept} if held else contents, indexes, examples)
