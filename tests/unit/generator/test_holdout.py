"""Held-out seed examples (issue 11, `evaluation.heldOutSeeds`): chosen per leaf and seeded, never
shown to the teacher, never in the phase datasets, written as `evaluation.jsonl` with its sha256."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from holdout_check import held_out_by_leaf, held_out_leaks, seed_examples, seed_texts
from pydantic import ValidationError

from labtune.contract import ConfigError, resolve_artifact
from labtune.contract.evaluate import EvalExample
from labtune.contract.generate import GenerateConfig, GenerateSummary
from labtune.generator.holdout import choose
from labtune.generator.run import generate

if TYPE_CHECKING:
    from conftest import FakeTeacher, SampleTaxonomy

MakeConfig = Callable[..., GenerateConfig]

CAPITALS = "compositional_skills/extraction/capitals/qna.yaml"
HAIKU = "compositional_skills/writing/haiku/qna.yaml"
SUN = "knowledge/astronomy/sun/qna.yaml"
LEAVES = (CAPITALS, HAIKU, SUN)
ONE = {"heldOutSeeds": 1}


def _output(config: GenerateConfig) -> Path:
    return resolve_artifact(config.output, config.artifact_root)


def _evaluation(config: GenerateConfig) -> list[EvalExample]:
    lines = (_output(config) / "evaluation.jsonl").read_text(encoding="utf-8").splitlines()
    return [EvalExample.model_validate_json(line) for line in lines]


def _digests(summary: GenerateSummary) -> tuple[str | None, ...]:
    outputs = summary.outputs
    return tuple(o.sha256 if o else None for o in (outputs.knowledge, outputs.skills, outputs.evaluation))


def test_held_out_seeds_become_the_evaluation_dataset(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    config = make_config(sample_taxonomy, evaluation=ONE)
    summary = generate(config, teacher=fake_teacher())
    evaluation = summary.outputs.evaluation
    assert evaluation is not None
    path = _output(config) / "evaluation.jsonl"
    assert evaluation.uri == str(path)
    assert evaluation.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    examples = _evaluation(config)
    assert evaluation.samples == len(examples) == 3 + 1 + 1  # a knowledge seed holds three pairs
    assert Counter(e.leaf for e in examples) == {SUN: 3, CAPITALS: 1, HAIKU: 1}
    assert len({e.id for e in examples}) == len(examples)

    held_out = held_out_by_leaf(config)
    assert sorted(held_out) == sorted(LEAVES)
    for leaf, entry in held_out.items():
        assert len(entry["seed_indexes"]) == 1
        assert entry["ids"] == [e.id for e in examples if e.leaf == leaf]
        (seed,) = [seed_examples(sample_taxonomy.root, leaf)[i] for i in entry["seed_indexes"]]
        mine = [e for e in examples if e.leaf == leaf]
        if leaf == SUN:  # closed-book: each pair is one question, without the seed's context
            pairs = [(qa["question"], qa["answer"]) for qa in seed["questions_and_answers"]]
            assert [(e.question, e.answer, e.context) for e in mine] == [(q, a, None) for q, a in pairs]
            assert {e.leaf_type for e in mine} == {"knowledge"}
        elif leaf == CAPITALS:  # a grounded skill keeps its context
            assert [(e.question, e.answer, e.context) for e in mine] == [
                (seed["question"], seed["answer"], seed["context"])
            ]
            assert mine[0].leaf_type == "grounded_skill"
        else:
            assert [(e.question, e.answer, e.context) for e in mine] == [
                (seed["question"], seed["answer"], None)
            ]
            assert mine[0].leaf_type == "freeform_skill"


@pytest.mark.parametrize("builtin", ["simple", "full"])
def test_the_teacher_and_the_datasets_never_see_the_held_out_seeds(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher], builtin: str
) -> None:
    config = make_config(sample_taxonomy, evaluation=ONE, pipeline={"builtin": builtin})
    teacher = fake_teacher()
    generate(config, teacher=teacher)
    prompts = [r.prompt for r in teacher.requests]
    for leaf, entry in held_out_by_leaf(config).items():
        kept = [
            s
            for i, s in enumerate(seed_examples(sample_taxonomy.root, leaf))
            if i not in entry["seed_indexes"]
        ]
        assert any(t in p for t in seed_texts(kept[0]) for p in prompts), "the kept seeds are in the prompts"
    checked, leaks = held_out_leaks(
        sample_taxonomy.root, (sample_taxonomy.documents / "sun.md").read_text(), config, prompts
    )
    assert leaks == []
    assert checked >= 3 * 2 + 2 + 3  # every question and context, most answers


def test_the_selection_is_seeded_per_leaf(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    def run(name: str, seed: int) -> tuple[dict[str, Any], tuple[str | None, ...]]:
        config = make_config(
            sample_taxonomy,
            output=str(tmp_path / name),
            scale={"samplesPerSeed": 2, "seed": seed},
            evaluation=ONE,
        )
        summary = generate(config, teacher=fake_teacher())
        return held_out_by_leaf(config), _digests(summary)

    first, again, other = run("a", 7), run("b", 7), run("c", 8)
    assert first == again
    assert first[0] != other[0]
    assert first[1][2] != other[1][2]
    # Each leaf's choice depends on the seed and its own path only.
    for leaf in LEAVES:
        assert len({choose(seed, leaf, 5, 1) for seed in range(20)}) > 1
        assert choose(7, leaf, 5, 2) == choose(7, leaf, 5, 2)


def test_holding_back_every_seed_is_a_config_error_before_anything_is_done(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    config = make_config(sample_taxonomy, evaluation={"heldOutSeeds": 5}, include=["knowledge/**"])
    teacher = fake_teacher()
    with pytest.raises(ConfigError) as error:
        generate(config, teacher=teacher)
    assert str(error.value) == (
        f"evaluation.heldOutSeeds 5: leaf {SUN} has 5 seed example(s): holding back 5 leaves none to "
        "generate from (it needs at least 6)"
    )
    assert not teacher.requests
    assert not _output(config).exists()

    # Every leaf at once, and before a teacher (here a model that does not exist) is made.
    teacher_config = {"backend": "transformers", "model": str(tmp_path / "no-such-model")}
    config = make_config(sample_taxonomy, evaluation={"heldOutSeeds": 7}, teacher=teacher_config)
    with pytest.raises(ConfigError) as error:
        generate(config)
    assert str(error.value) == (
        f"evaluation.heldOutSeeds 7: 3 leaves have too few seed examples; first: leaf {CAPITALS} has 5 "
        "seed example(s): holding back 7 leaves none to generate from (it needs at least 8)"
    )
    assert not _output(config).exists()


def test_no_held_out_seeds_changes_nothing(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    without = generate(make_config(sample_taxonomy, output=str(tmp_path / "a")), teacher=fake_teacher())
    config = make_config(sample_taxonomy, output=str(tmp_path / "b"), evaluation={"heldOutSeeds": 0})
    zero = generate(config, teacher=fake_teacher())
    assert _digests(zero) == _digests(without)
    assert zero.outputs.evaluation is None
    assert not (_output(config) / "evaluation.jsonl").exists()
    assert held_out_by_leaf(config) == {}


def test_a_fraction_holds_back_proportionally(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    def run(name: str, evaluation: dict[str, Any]) -> tuple[GenerateSummary, GenerateConfig]:
        config = make_config(sample_taxonomy, output=str(tmp_path / name), evaluation=evaluation)
        return generate(config, teacher=fake_teacher()), config

    count, _ = run("count", ONE)
    small, _ = run("small", {"heldOutSeedFraction": 0.1})  # 0.5 seeds rounds down, but at least one
    assert _digests(small) == _digests(count)
    half, config = run("half", {"heldOutSeedFraction": 0.5})  # 2.5 of 5 seeds: two
    assert {leaf: len(e["seed_indexes"]) for leaf, e in held_out_by_leaf(config).items()} == dict.fromkeys(
        LEAVES, 2
    )
    assert half.outputs.evaluation is not None
    assert half.outputs.evaluation.samples == 2 * 3 + 2 + 2

    with pytest.raises(
        ValidationError,
        match=r"set at most one of evaluation\.heldOutSeeds or evaluation\.heldOutSeedFraction",
    ):
        make_config(sample_taxonomy, evaluation={"heldOutSeeds": 1, "heldOutSeedFraction": 0.2})
    with pytest.raises(ValidationError, match="heldOutSeedFraction"):
        make_config(sample_taxonomy, evaluation={"heldOutSeedFraction": 1.0})


def test_a_checkpoint_made_with_the_seeds_visible_is_not_resumed(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    reference = fake_teacher()
    expected = generate(
        make_config(sample_taxonomy, output=str(tmp_path / "ref"), evaluation=ONE), teacher=reference
    )

    generate(
        make_config(sample_taxonomy), teacher=fake_teacher()
    )  # every leaf checkpointed, nothing held out
    teacher = fake_teacher()
    summary = generate(make_config(sample_taxonomy, evaluation=ONE), teacher=teacher)
    # Every training leaf starts over; the documents' rewrites do not depend on the seeds.
    assert len(teacher.requests) == len(reference.requests) - len(reference.rewrites())
    assert not teacher.rewrites()
    assert _digests(summary) == _digests(expected)

    again = fake_teacher()
    generate(make_config(sample_taxonomy, evaluation=ONE), teacher=again)
    assert again.requests == [], "the same held-out selection resumes"
