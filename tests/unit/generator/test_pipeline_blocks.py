"""Pipelines as data, parsers and blocks, with a deterministic fake teacher."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from labtune.contract import ConfigError
from labtune.generator import pipeline
from labtune.generator.engine import Engine, Row, StageCount, to_messages
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.parsers import ScoreParser, TaggedParser, TextParser
from labtune.generator.pipeline import (
    Block,
    CombineBlock,
    DedupeBlock,
    FlattenBlock,
    GenerateBlock,
    JudgeBlock,
    SampleTemplate,
)

if TYPE_CHECKING:
    from conftest import FakeTeacher

QA = TaggedParser(type="tagged", fields={"question": "[Q]", "answer": "[A]"}, separator="[END]")


def test_tagged_parser_reads_several_records_and_skips_incomplete_ones() -> None:
    text = "[Q] One? [A] Yes. [END]\n[Q] Two? [END] [Q] Three? [A] No. [END] trailing"
    assert QA.parse(text) == [{"question": "One?", "answer": "Yes."}, {"question": "Three?", "answer": "No."}]
    assert QA.parse("no tags at all") == []
    assert QA.parse("[A] answer first [Q] question after") == [
        {"question": "question after", "answer": "answer first"}
    ]
    assert QA.parse("[Q] [A] empty question") == []


def test_text_and_score_parsers() -> None:
    assert TextParser(type="text", field="answer").parse("  Paris.\n") == [{"answer": "Paris."}]
    assert TextParser(type="text", field="answer").parse("   ") == []
    score = ScoreParser(type="score", field="s")
    assert score.parse("Reasoning mentions score 0 first... Score: 2") == [{"s": "2"}]
    assert score.parse("**Score:** 1.5") == [{"s": "1.5"}]
    assert score.parse("I think it is good") == []


def test_builtin_pipelines_load_with_their_prompts() -> None:
    for name in pipeline.BUILTIN:
        loaded = pipeline.load_builtin(name)
        writes_choices = name == "multiple-choice"
        expected = {"knowledge"} if writes_choices else {"knowledge", "freeform_skill", "grounded_skill"}
        assert set(loaded.flows) == expected
        for flow in loaded.flows.values():
            assert flow.output == ("choice" if writes_choices else "sample")
            assert all(b.prompt for b in flow.blocks if isinstance(b, GenerateBlock | JudgeBlock))
    full = pipeline.load_builtin("full")
    judges = [b.name for b in full.flows["knowledge"].blocks if isinstance(b, JudgeBlock)]
    assert judges == ["judge_faithfulness", "judge_relevancy", "judge_question"]
    kinds = [b.type for b in full.flows["grounded_skill"].blocks]
    assert kinds == ["generate", "generate", "dedupe", "judge", "generate", "judge"]


def test_custom_pipeline_file_with_relative_prompt(tmp_path: Path) -> None:
    (tmp_path / "ask.j2").write_text("Say {{ word }}")
    (tmp_path / "p.yaml").write_text(
        "name: custom\nflows:\n  freeform_skill:\n    blocks:\n"
        "      - {type: generate, name: g, prompt_file: ask.j2, parser: {type: text, field: answer}}\n"
        "    sample: {user: '{{ word }}', assistant: '{{ answer }}'}\n"
    )
    loaded = pipeline.load(tmp_path / "p.yaml")
    assert loaded.flows["freeform_skill"].blocks[0].prompt == "Say {{ word }}"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="has no flow for knowledge leaves"):
        loaded.flow("knowledge")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: x\nflows: {knowledge: {blocks: [{type: sing, name: a}], sample: {user: u, assistant: a}}}",
            "does not match any of the expected tags",
        ),
        (
            "name: x\nflows: {knowledge: {blocks: [{type: generate, name: a, "
            "parser: {type: text, field: f}}], sample: {user: u, assistant: a}}}",
            "set exactly one of prompt or prompt_file",
        ),
        (
            "name: x\nflows: {knowledge: {blocks: [{type: generate, name: a, prompt_file: nope.j2, "
            "parser: {type: text, field: f}}], sample: {user: u, assistant: a}}}",
            "nope.j2",
        ),
        (
            "name: x\nflows: {knowledge: {blocks: [{type: dedupe, name: d, fields: [q], extra: 1}], "
            "sample: {user: u, assistant: a}}}",
            "extra",
        ),
        ("{unclosed", "not valid YAML"),
    ],
)
def test_invalid_pipelines_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        pipeline.load(tmp_path / "p.yaml")


def _run(
    teacher: FakeTeacher, block: Block, rows: list[Row], samples_per_seed: int = 2
) -> tuple[list[Row], StageCount]:
    engine = Engine(teacher, GeneratorMetrics(), system="be brief", seed=1, samples_per_seed=samples_per_seed)
    return asyncio.run(engine.run(block, rows, salt="leaf"))


def test_generate_block_asks_n_times_per_row_and_counts_malformed(fake_teacher: type[FakeTeacher]) -> None:
    replies = iter(["[Q] a? [A] 1 [END] [Q] b? [A] 2 [END]", "garbage", None, "[Q] c? [A] 3 [END]"])
    teacher = fake_teacher(reply=lambda request: next(replies))
    block = GenerateBlock(
        type="generate", name="gen", prompt="About {{ topic }}", n="samples_per_seed", parser=QA
    )
    out, count = _run(teacher, block, [{"topic": "x"}, {"topic": "y"}])
    assert [r["question"] for r in out] == ["a?", "b?", "c?"]
    assert out[2]["topic"] == "y"
    assert count == StageCount(stage="gen", input=2, output=3, malformed=1, rejected=1)
    assert [r.prompt for r in teacher.requests] == ["About x", "About x", "About y", "About y"]
    assert {r.system for r in teacher.requests} == {"be brief"}
    assert len({r.seed for r in teacher.requests}) == 4


def test_request_seeds_are_stable(fake_teacher: type[FakeTeacher]) -> None:
    block = GenerateBlock(type="generate", name="gen", prompt="p", n=3, parser=QA)
    first, second = fake_teacher(), fake_teacher()
    _run(first, block, [{}])
    _run(second, block, [{}])
    assert [r.seed for r in first.requests] == [r.seed for r in second.requests]


def test_judge_block_filters_by_threshold(fake_teacher: type[FakeTeacher]) -> None:
    scores = {"good": "Score: 2", "meh": "Score: 1", "broken": "no idea"}
    teacher = fake_teacher(reply=lambda request: scores[request.prompt])
    block = JudgeBlock(
        type="judge",
        name="judge",
        prompt="{{ q }}",
        parser=ScoreParser(type="score", field="score"),
        threshold=2,
    )
    out, count = _run(teacher, block, [{"q": "good"}, {"q": "meh"}, {"q": "broken"}])
    assert out == [{"q": "good", "score": 2.0}]
    assert count == StageCount(stage="judge", input=3, output=1, malformed=1)
    assert all(r.temperature == 0 for r in teacher.requests)


def test_dedupe_flatten_combine(fake_teacher: type[FakeTeacher]) -> None:
    rows: list[Row] = [{"q": "Why?", "items": [{"a": 1}, {"a": 2}]}, {"q": " why? ", "items": ["x"]}]
    out, count = _run(fake_teacher(), DedupeBlock(type="dedupe", name="d", fields=["q"]), rows)
    assert out == rows[:1]
    assert (count.input, count.output) == (2, 1)
    out, _ = _run(fake_teacher(), FlattenBlock(type="flatten", name="f", field="items"), rows)
    assert [r.get("a", r["items"]) for r in out] == [1, 2, "x"]
    block = CombineBlock(type="combine", name="c", field="both", template="{{ q | trim }}!")
    out, _ = _run(fake_teacher(), block, rows)
    assert [r["both"] for r in out] == ["Why?!", "why?!"]


def test_template_errors_name_the_block(fake_teacher: type[FakeTeacher]) -> None:
    block = GenerateBlock(type="generate", name="gen", prompt="{{ missing }}", parser=QA)
    with pytest.raises(ConfigError, match="block 'gen': template error: 'missing' is undefined"):
        _run(fake_teacher(), block, [{}])


def test_templates_are_sandboxed(fake_teacher: type[FakeTeacher]) -> None:
    block = CombineBlock(
        type="combine", name="c", field="x", template="{{ ''.__class__.__mro__[1].__subclasses__() }}"
    )
    with pytest.raises(ConfigError, match="block 'c'"):
        _run(fake_teacher(), block, [{}])


def test_sample_template() -> None:
    template = SampleTemplate(system="sys", user="{{ context }}\n\n{{ question }}", assistant="{{ answer }}")
    assert to_messages(template, {"context": "C", "question": "Q?", "answer": "A"}, "here") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "C\n\nQ?"},
        {"role": "assistant", "content": "A"},
    ]
