"""`labtune generate` end to end with a deterministic fake teacher: datasets, summary, report,
determinism, resume after a failure, and bad input."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from click.testing import CliRunner

from labtune.cli import main
from labtune.contract import (
    EXIT_CONFIG_ERROR,
    EXIT_FAILED,
    SUMMARY_LIMIT_BYTES,
    ConfigError,
    resolve_artifact,
    write_summary,
)
from labtune.contract.generate import GenerateConfig
from labtune.contract.records import Record
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.run import GenerationError, generate
from labtune.generator.teacher import CompletionRequest, TeacherError

if TYPE_CHECKING:
    from conftest import FakeTeacher, Git, SampleTaxonomy

MakeConfig = Callable[..., GenerateConfig]


def _records(path: Path) -> list[Record]:
    return [Record.model_validate_json(line) for line in path.read_text().splitlines()]


def _output(config: GenerateConfig) -> Path:
    return resolve_artifact(config.output, config.artifact_root)


@pytest.mark.parametrize("builtin", ["simple", "full"])
def test_generates_phase_datasets(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher], builtin: str
) -> None:
    config = make_config(sample_taxonomy, pipeline={"builtin": builtin})
    summary = generate(config, teacher=fake_teacher())
    assert summary.taxonomy_commit == sample_taxonomy.commit
    assert (summary.leaves_done, summary.leaves_total, summary.pipeline) == (3, 3, builtin)
    knowledge, skills = summary.outputs.knowledge, summary.outputs.skills
    assert knowledge is not None
    assert skills is not None
    phase1, phase2 = _records(Path(knowledge.uri)), _records(Path(skills.uri))
    assert (knowledge.samples, skills.samples) == (len(phase1), len(phase2))
    assert all(r.unmask and r.metadata.leaf_type == "knowledge" for r in phase1)
    by_source = Counter(r.metadata.source for r in phase1)
    assert set(by_source) == {"generated", "auxiliary"}
    assert by_source["auxiliary"] == 2  # one chunk, rewritten as a summary and as a list of facts
    assert knowledge.sources == by_source
    # Phase 1 trains each knowledge sample whole, its chunk before the question.
    chunk = "# The Sun\n\nThe Sun is the star at the centre of the Solar System"
    assert all(r.messages[0].content.startswith(chunk) for r in phase1 if r.metadata.source == "generated")
    assert all(not r.metadata.document for r in phase1 + phase2)
    in_phase2 = Counter(r.metadata.source for r in phase2)
    assert skills.sources == in_phase2
    generated = by_source["generated"]
    skill_samples = in_phase2["generated"] - generated  # the knowledge samples come again whole
    assert in_phase2 == {"generated": skill_samples + generated, "raft": generated, "auxiliary": 2}
    assert {r.id for r in phase2 if r.unmask} == {r.id for r in phase1}
    raft = [r for r in phase2 if r.metadata.source == "raft"]
    assert all(r.messages[0].content.startswith("Document:\n") and not r.unmask for r in raft)
    assert summary.samples_kept == generated + skill_samples + 2
    assert len({r.id for r in phase1}) == len(phase1)
    for record in phase1 + phase2:
        assert [m.role for m in record.messages] == ["user", "assistant"]
    assert set(summary.stages) >= {"knowledge/generate_qa", "freeform_skill/dedupe"}
    assert summary.leaves[0].path == "compositional_skills/extraction/capitals/qna.yaml"
    report = json.loads((_output(config) / "report.json").read_text())
    assert [leaf["path"] for leaf in report["leaves"]] == [leaf.path for leaf in summary.leaves]
    grounded = next(r for r in phase2 if r.metadata.leaf_type == "grounded_skill")
    assert grounded.messages[0].content.startswith("Country ")  # the context comes first


def test_knowledge_prompts_carry_the_document_and_seed_examples(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    teacher = fake_teacher()
    generate(make_config(sample_taxonomy, include=["knowledge/**"]), teacher=teacher)
    rewritten = teacher.rewrites()
    prompts = [r.prompt for r in teacher.requests if r not in rewritten]
    assert len(prompts) == 5 * 2  # one chunk x five seed examples x samplesPerSeed
    assert len(rewritten) == 2  # the chunk, rewritten as a summary and as facts
    assert all("fuses about 600 million tonnes" in p for p in prompts)
    assert any("Question: How old is the Sun?\nAnswer: About 4.6 billion years." in p for p in prompts)


def test_same_inputs_and_seed_give_the_same_files(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    def digests(name: str, seed: int) -> tuple[str | None, ...]:
        config = make_config(
            sample_taxonomy, output=str(tmp_path / name), scale={"samplesPerSeed": 2, "seed": seed}
        )
        outputs = generate(config, teacher=fake_teacher()).outputs
        return tuple(o.sha256 if o else None for o in (outputs.knowledge, outputs.skills))

    assert digests("a", 1) == digests("b", 1)
    assert digests("a", 1) != digests("c", 2)


def test_resumes_after_a_teacher_failure(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    full = {"pipeline": {"builtin": "full"}}
    reference = fake_teacher()
    expected = generate(
        make_config(sample_taxonomy, output=str(tmp_path / "reference"), **full), teacher=reference
    )

    config = make_config(sample_taxonomy, **full)
    with pytest.raises(TeacherError, match="fake teacher is down"):
        generate(config, teacher=fake_teacher(fail_after=len(reference.requests) // 2))
    checkpoints = _output(config) / "checkpoints"
    assert any(checkpoints.glob("*/stage-000.jsonl")), "progress made before the failure is kept"
    assert not (_output(config) / "knowledge.jsonl").exists()

    resumed = fake_teacher()
    summary = generate(config, teacher=resumed)
    assert 0 < len(resumed.requests) < len(reference.requests)
    assert summary.outputs == expected.outputs.model_copy(
        update={
            "knowledge": expected.outputs.knowledge.model_copy(update={"uri": summary.outputs.knowledge.uri}),  # type: ignore[union-attr]
            "skills": expected.outputs.skills.model_copy(update={"uri": summary.outputs.skills.uri}),  # type: ignore[union-attr]
        }
    )
    again = fake_teacher()
    generate(config, teacher=again)
    assert again.requests == [], "finished leaves are skipped"


def test_changed_inputs_discard_checkpoints(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    generate(make_config(sample_taxonomy), teacher=fake_teacher())
    teacher = fake_teacher()
    generate(make_config(sample_taxonomy, scale={"samplesPerSeed": 3}), teacher=teacher)
    # The scale changed (its seed and chunk size with it): every leaf and both rewrites start over.
    assert len(teacher.requests) == 3 * 5 * 3 + 2


def _strict_judge(fake_teacher: type[FakeTeacher]) -> Callable[[CompletionRequest], str | None]:
    """Replies under which every knowledge sample fails the faithfulness judge."""
    base = fake_teacher().reply

    def reply(request: CompletionRequest) -> str | None:
        return "Score: 0" if "faithful" in request.prompt else base(request)

    return reply


SUN = "knowledge/astronomy/sun/qna.yaml"
SUN_FAILED = (
    f"leaf {SUN}: no sample survived the pipeline (generate_qa 5->20, dedupe 20->20, "
    "judge_faithfulness 20->0, judge_relevancy 0->0, judge_question 0->0)"
)


def test_nothing_surviving_names_the_leaf_and_the_counts(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    config = make_config(sample_taxonomy, pipeline={"builtin": "full"})
    with pytest.raises(GenerationError) as failure:
        generate(config, teacher=fake_teacher(reply=_strict_judge(fake_teacher)))
    assert str(failure.value) == (
        "1 of 3 leaves produced nothing (or set leafFailurePolicy: SkipLeaf to finish without it): "
        + SUN_FAILED
    )
    report = json.loads((_output(config) / "report.json").read_text())
    assert len(report["leaves"]) == 2  # the other leaves' samples are kept (checkpointed)
    assert report["failures"] == [{"path": SUN, "reason": SUN_FAILED}]
    assert not (_output(config) / "skills.jsonl").exists()


def test_skip_leaf_finishes_with_the_good_leaves_and_names_the_failed_one(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    """The same failure under leafFailurePolicy SkipLeaf: the datasets hold every sample of the
    other leaves (the same as a run without the failing leaf), and the summary says which failed."""
    config = make_config(sample_taxonomy, pipeline={"builtin": "full"}, leafFailurePolicy="SkipLeaf")
    summary = generate(config, teacher=fake_teacher(reply=_strict_judge(fake_teacher)))
    assert (summary.leaves_done, summary.leaves_total, summary.failed_leaf_count) == (2, 3, 1)
    assert [f.model_dump() for f in summary.failed_leaves] == [{"path": SUN, "reason": SUN_FAILED}]
    assert summary.outputs.knowledge is None  # the only knowledge leaf failed
    assert summary.outputs.skills is not None
    skills = _records(Path(summary.outputs.skills.uri))
    assert {r.metadata.leaf for r in skills} == {
        "compositional_skills/extraction/capitals/qna.yaml",
        "compositional_skills/writing/haiku/qna.yaml",
    }
    report = json.loads((_output(config) / "report.json").read_text())
    assert report["failures"] == [{"path": SUN, "reason": SUN_FAILED}]
    alone = make_config(
        sample_taxonomy,
        pipeline={"builtin": "full"},
        include=["compositional_skills/**"],
        output=str(_output(config).parent / "without-the-leaf"),
    )
    without = generate(alone, teacher=fake_teacher())  # from scratch, in a folder of its own
    assert without.outputs.skills is not None
    assert without.outputs.skills.sha256 == summary.outputs.skills.sha256


def test_skip_leaf_still_fails_a_run_where_every_leaf_failed(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    config = make_config(
        sample_taxonomy, pipeline={"builtin": "full"}, include=["knowledge/**"], leafFailurePolicy="SkipLeaf"
    )
    with pytest.raises(GenerationError) as failure:
        generate(config, teacher=fake_teacher(reply=_strict_judge(fake_teacher)))
    assert str(failure.value) == f"1 of 1 leaves produced nothing: {SUN_FAILED}"


def test_malformed_replies_are_dropped_and_counted(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    base = fake_teacher().reply

    def flaky(request: CompletionRequest) -> str | None:
        return "no tags here" if request.seed % 2 else base(request)

    metrics = GeneratorMetrics()
    generate(
        make_config(sample_taxonomy, include=["compositional_skills/**"]),
        teacher=fake_teacher(reply=flaky),
        metrics=metrics,
    )
    report = json.loads((_output(make_config(sample_taxonomy)) / "report.json").read_text())
    malformed = sum(stage["malformed"] for leaf in report["leaves"] for stage in leaf["stages"])
    assert malformed > 0
    assert (
        metrics.registry.get_sample_value("labtune_generator_errors_total", {"kind": "malformed_reply"})
        == malformed
    )
    assert metrics.registry.get_sample_value("labtune_generator_leaves_done") == 2


def test_summary_fits_the_termination_log_with_many_leaves(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher], git: type[Git]
) -> None:
    source = (sample_taxonomy.root / "compositional_skills/writing/haiku/qna.yaml").read_text()
    for i in range(80):
        leaf = sample_taxonomy.root / f"compositional_skills/writing/style_number_{i:03d}/qna.yaml"
        leaf.parent.mkdir(parents=True)
        leaf.write_text(source.replace("haiku", f"haiku in style {i}"))
    commit = git.commit_all(sample_taxonomy.root, "many leaves")
    config = make_config(sample_taxonomy, taxonomy={"url": str(sample_taxonomy.root), "commit": commit})
    summary = generate(config, teacher=fake_teacher())
    assert summary.leaves_done == 83
    assert 0 < len(summary.leaves) < 83
    assert len(write_summary(summary, config.termination_log).encode()) <= SUMMARY_LIMIT_BYTES


def test_replay_datasets(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    replay = tmp_path / "replay.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(50)
    ]
    replay.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    mixing = {"knowledgeReplayRatio": 0.0, "replay": [{"uri": str(replay), "samples": 7}]}
    summary = generate(
        make_config(sample_taxonomy, include=["compositional_skills/**"], mixing=mixing),
        teacher=fake_teacher(),
    )
    assert summary.outputs.skills is not None
    phase2 = _records(Path(summary.outputs.skills.uri))
    assert sum(r.metadata.source == str(replay) for r in phase2) == 7
    assert summary.outputs.knowledge is None

    replay.write_text(json.dumps(lines[0]) + '\n{"messages": [{"role": "robot"}]}\n')
    with pytest.raises(ConfigError, match=rf"replay dataset {replay}:2: messages\.0\.role"):
        generate(make_config(sample_taxonomy, mixing=mixing), teacher=fake_teacher())
    # The trainer would refuse it later, after the teacher was paid: refused here, before.
    replay.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    with pytest.raises(
        ConfigError, match=rf"replay dataset {replay}:1: \(record\): the sample has no assistant turn$"
    ):
        generate(make_config(sample_taxonomy, mixing=mixing), teacher=fake_teacher())


def test_invalid_selected_leaf_is_a_config_error(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher], git: type[Git]
) -> None:
    leaf = sample_taxonomy.root / "compositional_skills/writing/haiku/qna.yaml"
    leaf.write_text(leaf.read_text().replace("version: 3", "version: 3  "))
    commit = git.commit_all(sample_taxonomy.root)
    config = make_config(sample_taxonomy, taxonomy={"url": str(sample_taxonomy.root), "commit": commit})
    with pytest.raises(ConfigError, match=r"compositional_skills/writing/haiku/qna\.yaml:1: trailing spaces"):
        generate(config, teacher=fake_teacher())


def test_only_changed_leaves(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher], git: type[Git]
) -> None:
    git.run(sample_taxonomy.root, "checkout", "--quiet", "-b", "feature")
    leaf = sample_taxonomy.root / "compositional_skills/writing/haiku/qna.yaml"
    leaf.write_text(leaf.read_text().replace("the sea", "the ocean"))
    git.commit_all(sample_taxonomy.root)
    taxonomy = {"url": str(sample_taxonomy.root), "branch": "feature"}
    summary = generate(
        make_config(sample_taxonomy, taxonomy=taxonomy, leaves="changed", base="origin/main"),
        teacher=fake_teacher(),
    )
    assert [leaf.path for leaf in summary.leaves] == ["compositional_skills/writing/haiku/qna.yaml"]
    with pytest.raises(ConfigError, match="no leaves to generate for"):
        generate(
            make_config(
                sample_taxonomy, taxonomy={**taxonomy, "branch": "main"}, leaves="changed", base="origin/main"
            ),
            teacher=fake_teacher(),
        )


@pytest.mark.parametrize(
    ("files", "pattern", "message"),
    [
        ({"sun.md": "# Sun"}, "*.txt", r"document pattern '\*.txt' matches no file in "),
        ({"sun.pdf": "%PDF-1.4"}, "*.pdf", r":sun.pdf: PDF documents need docling \(pip install docling\)"),
        ({"sun.docx": "x"}, "*.docx", r":sun.docx: unsupported document format .docx: use Markdown or PDF"),
    ],
)
def test_document_problems_name_the_file(
    sample_taxonomy: SampleTaxonomy,
    make_config: MakeConfig,
    fake_teacher: type[FakeTeacher],
    git: type[Git],
    files: dict[str, str],
    pattern: str,
    message: str,
) -> None:
    for name, text in files.items():
        (sample_taxonomy.documents / name).write_text(text)
    documents_commit = git.commit_all(sample_taxonomy.documents)
    leaf = sample_taxonomy.root / "knowledge/astronomy/sun/qna.yaml"
    leaf.write_text(
        leaf.read_text()
        .replace(sample_taxonomy.documents_commit, documents_commit)
        .replace('"*.md"', f'"{pattern}"')
    )
    commit = git.commit_all(sample_taxonomy.root)
    config = make_config(sample_taxonomy, taxonomy={"url": str(sample_taxonomy.root), "commit": commit})
    with pytest.raises(ConfigError, match=message):
        generate(config, teacher=fake_teacher())


def test_generate_command_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "generate.yaml"
    config.write_text(
        yaml.safe_dump({"taxonomy": {"url": "x"}, "output": "o", "teacher": {"model": "m"}, "pipeline": {}})
    )
    result = CliRunner().invoke(main, ["generate", "--config", str(config)])
    assert result.exit_code == EXIT_CONFIG_ERROR
    assert result.output.strip().endswith(
        "pipeline: Value error, set exactly one of pipeline.builtin or pipeline.path"
    )
    result = CliRunner().invoke(main, ["generate", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == EXIT_CONFIG_ERROR
    assert "cannot read config" in result.output


def test_generate_command_unreachable_teacher(sample_taxonomy: SampleTaxonomy, tmp_path: Path) -> None:
    config = tmp_path / "generate.yaml"
    data = {
        "taxonomy": {"url": str(sample_taxonomy.root)},
        "leaves": "all",
        "include": ["compositional_skills/writing/**"],
        "teacher": {"model": "m", "url": "http://127.0.0.1:9/v1", "maxRetries": 1, "timeoutSeconds": 2},
        "pipeline": {"builtin": "simple"},
        "output": str(tmp_path / "out"),
        "metricsPort": 0,
        "terminationLog": str(tmp_path / "termination-log"),
    }
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["generate", "--config", str(config)])
    assert result.exit_code == EXIT_FAILED
    last = result.output.strip().splitlines()[-1]
    teacher = "teacher m at http://127.0.0.1:9/v1"
    assert last == f"error: {teacher} failed after 1 retries: APIConnectionError: Connection error."
    assert not (tmp_path / "termination-log").exists()


def test_metrics_endpoint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = GeneratorMetrics()
    metrics.leaves_total.set(4)
    metrics.samples_out.labels("judge").inc(3)
    metrics.serve(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        text = response.read().decode()
    assert "labtune_generator_leaves_total 4.0" in text
    assert 'labtune_generator_stage_output_samples_total{stage="judge"} 3.0' in text
