"""`evaluation.multipleChoice`: the teacher writes multiple-choice questions from each knowledge
leaf's document chunks with the multiple-choice pipeline, its judge filters them, and they are
written as `evaluation-choices.jsonl` (with the fake teacher of conftest)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from labtune.contract import ConfigError, resolve_artifact
from labtune.contract.evaluate import ChoiceExample
from labtune.contract.generate import GenerateConfig
from labtune.generator.choices import answer_index
from labtune.generator.pipeline import load_builtin
from labtune.generator.run import GenerationError, generate
from labtune.generator.teacher import CompletionRequest

if TYPE_CHECKING:
    from conftest import FakeTeacher, SampleTaxonomy

MakeConfig = Callable[..., GenerateConfig]
KNOWLEDGE = "knowledge/astronomy/sun/qna.yaml"


def _output(config: GenerateConfig) -> Path:
    return resolve_artifact(config.output, config.artifact_root)


def test_knowledge_leaves_get_judged_multiple_choice_questions(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher], tmp_path: Path
) -> None:
    teacher = fake_teacher()
    config = make_config(sample_taxonomy, multipleChoice={"questionsPerChunk": 3})
    summary = generate(config, teacher=teacher)

    written = summary.outputs.evaluation_choices
    assert written is not None
    path = _output(config) / "evaluation-choices.jsonl"
    assert written.uri == str(path)
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    questions = [ChoiceExample.model_validate_json(line) for line in path.read_text().splitlines()]
    asked = [r for r in teacher.requests if "multiple-choice test" in r.prompt]
    # Each chunk's reply has three questions: the judge rejects the one marked D, answer E names
    # no choice (dropped as malformed), the one marked B is kept.
    assert len(questions) == written.samples == len(asked) > 0
    assert {q.leaf for q in questions} == {KNOWLEDGE}
    assert all(q.leaf_type == "knowledge" and q.answer == 1 and len(q.choices) == 4 for q in questions)
    assert questions[0].choices[1].startswith("No ")
    assert len({q.id for q in questions}) == len(questions)
    assert summary.stages["multipleChoice/generate_choices"] == 3 * len(asked)
    assert summary.stages["multipleChoice/judge_choice"] == 2 * len(asked)
    assert summary.stages["multipleChoice/choice"] == len(asked)
    # The prompt is the chunk and the count asked for, one request per chunk (not per seed example).
    assert all("Write 3 multiple-choice question(s)" in r.prompt for r in asked)
    chunks = {r.prompt.split("Document:\n", 1)[1].split("\n\nWrite", 1)[0] for r in asked}
    assert len(chunks) == len(asked)
    report = json.loads((_output(config) / "report.json").read_text())
    (leaf,) = report["choices"]
    assert leaf["path"] == KNOWLEDGE
    choice_stage = next(s for s in leaf["stages"] if s["stage"] == "choice")
    assert choice_stage["malformed"] == len(asked)
    assert report["choice_failures"] == []

    # The training datasets are what a run without multiple-choice questions writes.
    without = config.model_copy(update={"multiple_choice": None, "output": str(tmp_path / "plain")})
    plain = generate(without, teacher=fake_teacher())
    assert plain.outputs.evaluation_choices is None
    for name in ("knowledge", "skills"):
        ours, theirs = getattr(summary.outputs, name), getattr(plain.outputs, name)
        assert (ours.sha256, ours.samples) == (theirs.sha256, theirs.samples)


@pytest.mark.parametrize(
    ("answer", "index"),
    [
        ("B", 1),
        ("b)", 1),
        ("(C)", 2),
        ("2", 1),
        (" Paris ", 0),
        ("E", None),
        ("5", None),
        ("0", None),
        ("", None),
    ],
)
def test_the_answer_names_a_choice_by_letter_number_or_text(answer: str, index: int | None) -> None:
    assert answer_index(answer, ["paris", "Lyon", "Nice", "Lille"]) == index


def test_a_leaf_without_a_surviving_question_fails_the_run_when_it_is_the_only_one(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    base = fake_teacher().reply

    def reply(request: CompletionRequest) -> str | None:
        return "Score: 0" if "Marked answer:" in request.prompt else base(request)

    config = make_config(sample_taxonomy, multipleChoice={})
    with pytest.raises(
        GenerationError, match=r"evaluation.multipleChoice: no question survived .* 1 knowledge leaves"
    ):
        generate(config, teacher=fake_teacher(reply=reply))
    report = json.loads((_output(config) / "report.json").read_text())
    assert report["choice_failures"][0]["path"] == KNOWLEDGE
    assert "judge_choice" in report["choice_failures"][0]["reason"]
    assert not (_output(config) / "evaluation-choices.jsonl").exists()


def test_a_training_pipeline_cannot_write_multiple_choice_questions(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    config = make_config(sample_taxonomy, multipleChoice={"pipeline": {"builtin": "full"}})
    wrote = "pipeline 'full': its knowledge flow writes training samples, where multiple-choice"
    with pytest.raises(ConfigError, match=wrote):
        generate(config, teacher=fake_teacher())
    with pytest.raises(ConfigError, match="writes multiple-choice questions, where training samples"):
        load_builtin("multiple-choice").flow("knowledge")
