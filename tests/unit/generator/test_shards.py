"""A run split in shards (`labtune generate --shard INDEX`, then `--mix`) with a deterministic
fake teacher: the split is balanced and the same in every shard, the shards ask the teacher for
disjoint leaves, the mix writes the same bytes as a one-pod run, a shard that failed is run again
alone, and a mix before every shard finished says which one is missing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from labtune.cli import main
from labtune.contract import EXIT_CONFIG_ERROR, EXIT_FAILED, ConfigError, resolve_artifact
from labtune.contract.generate import GenerateConfig
from labtune.generator import shards
from labtune.generator.run import GenerationError, generate, generate_shard, mix_shards
from labtune.generator.teacher import TeacherError

if TYPE_CHECKING:
    from conftest import FakeTeacher, SampleTaxonomy

MakeConfig = Callable[..., GenerateConfig]
DATASETS = ("knowledge.jsonl", "skills.jsonl", "evaluation.jsonl", "evaluation-choices.jsonl")
FULL = {
    "pipeline": {"builtin": "full"},
    "evaluation": {"heldOutSeeds": 1},
    "multipleChoice": {"questionsPerChunk": 2},
}


def _output(config: GenerateConfig) -> Path:
    return resolve_artifact(config.output, config.artifact_root)


def _files(config: GenerateConfig) -> dict[str, bytes]:
    return {name: (_output(config) / name).read_bytes() for name in DATASETS}


def _write(config: GenerateConfig, path: Path) -> Path:
    path.write_text(config.model_dump_json(by_alias=True))
    return path


def test_assign_balances_expected_work_the_same_way_every_time() -> None:
    weights = {"a": 10, "b": 9, "c": 2, "d": 1, "e": 0}
    split = shards.assign(weights, 2)
    loads = [sum(max(w, 1) for p, w in weights.items() if split[p] == i) for i in range(2)]
    assert sorted(loads) == [11, 12]  # by count alone it could be 3 leaves (21) against 2 (2)
    assert split == shards.assign(dict(reversed(weights.items())), 2)
    assert set(shards.assign({"only": 5}, 3).values()) == {0}  # more shards than leaves: some idle


def test_shards_then_mix_write_the_bytes_of_a_one_pod_run(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    single_teacher = fake_teacher()
    single = make_config(sample_taxonomy, output=str(tmp_path / "single"), **FULL)
    expected = generate(single, teacher=single_teacher)

    split = make_config(sample_taxonomy, output=str(tmp_path / "split"), shards=2, **FULL)
    teachers = [fake_teacher(), fake_teacher()]
    summaries = [generate_shard(split, index, teacher=teachers[index]) for index in range(2)]
    assert [s.leaves_total for s in summaries] != [3, 0], "one shard took every leaf"
    assert sum(s.leaves_done for s in summaries) == 3
    asked = [{r.model_dump_json() for r in t.requests} for t in teachers]
    assert not asked[0] & asked[1], "two shards asked the teacher the same"
    assert asked[0] | asked[1] == {r.model_dump_json() for r in single_teacher.requests}

    mixed = mix_shards(split)
    assert _files(split) == _files(single)
    for name in ("knowledge", "skills", "evaluation", "evaluation_choices"):
        got, want = getattr(mixed.outputs, name), getattr(expected.outputs, name)
        assert (got.sha256, got.samples) == (want.sha256, want.samples)
    assert mixed.cost.prompt_tokens == expected.cost.prompt_tokens
    assert (mixed.leaves_done, mixed.samples_kept, mixed.stages) == (
        expected.leaves_done,
        expected.samples_kept,
        expected.stages,
    )
    report = json.loads((_output(split) / "report.json").read_text())
    assert report["held_out"] == json.loads((_output(single) / "report.json").read_text())["held_out"]


def test_a_failed_shard_runs_again_alone_and_the_mix_waits_for_it(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    config = make_config(sample_taxonomy, shards=2, **FULL)
    generate_shard(config, 0, teacher=fake_teacher())
    with pytest.raises(TeacherError, match="fake teacher is down"):
        generate_shard(config, 1, teacher=fake_teacher(fail_after=3))
    with pytest.raises(GenerationError, match=r"shard 1 of 2 has not finished: .*shard-001\.json"):
        mix_shards(config)

    resumed = fake_teacher()
    generate_shard(config, 1, teacher=resumed)
    assert resumed.requests, "the failed shard's unfinished leaves are asked for"
    rerun = fake_teacher()
    generate_shard(config, 1, teacher=rerun)
    assert rerun.requests == [], "a finished shard's leaves are skipped"
    assert mix_shards(config).leaves_done == 3


def test_leaves_from_the_leaf_cache_reach_the_mix(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    cache = {"cache": {"uri": str(tmp_path / "cache")}}
    single = make_config(sample_taxonomy, output=str(tmp_path / "single"), **cache, **FULL)
    generate(single, teacher=fake_teacher())
    split = make_config(sample_taxonomy, output=str(tmp_path / "split"), shards=2, **cache, **FULL)
    teachers = [fake_teacher(), fake_teacher()]
    for index, teacher in enumerate(teachers):
        generate_shard(split, index, teacher=teacher)
    assert teachers[0].requests == teachers[1].requests == []
    summary = mix_shards(split)
    assert (summary.cost.leaves_reused, summary.cost.leaves_generated) == (3, 0)
    assert _files(split) == _files(single)


def test_an_outcome_of_another_run_is_not_mixed(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher]
) -> None:
    config = make_config(sample_taxonomy, shards=2)
    for index in range(2):
        generate_shard(config, index, teacher=fake_teacher())
    other = make_config(sample_taxonomy, shards=2, scale={"samplesPerSeed": 3, "chunkTokens": 128, "seed": 7})
    with pytest.raises(GenerationError, match=r"shard-000\.json was written by a run with another config"):
        mix_shards(other)


def test_a_split_run_needs_its_step(sample_taxonomy: SampleTaxonomy, make_config: MakeConfig) -> None:
    with pytest.raises(ConfigError, match=r"split in 2 shards: run `labtune generate --shard INDEX`"):
        generate(make_config(sample_taxonomy, shards=2))
    with pytest.raises(ConfigError, match=r"shard index 2 is not one of the run's 2 \(0 to 1\)"):
        generate_shard(make_config(sample_taxonomy, shards=2), 2)


def test_the_generate_command_checks_the_shard_options(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, tmp_path: Path
) -> None:
    (tmp_path / "run").mkdir()  # the termination log's folder
    unsplit = _write(make_config(sample_taxonomy), tmp_path / "unsplit.json")
    split = _write(make_config(sample_taxonomy, shards=2), tmp_path / "split.json")
    runner = CliRunner()

    result = runner.invoke(main, ["generate", "--config", str(unsplit), "--shard", "0"])
    assert (result.exit_code, result.output.strip()) == (
        EXIT_CONFIG_ERROR,
        "error: the run is not split in shards (shards: 1): run it without --shard or --mix",
    )
    result = runner.invoke(main, ["generate", "--config", str(split), "--shard", "0", "--mix"])
    assert result.exit_code == 2
    assert "--shard, --mix and --plan are different steps" in result.output
    result = runner.invoke(main, ["generate", "--config", str(split), "--mix"])
    assert result.exit_code == EXIT_FAILED
    assert result.output.strip().startswith("error: shard 0 of 2 has not finished")
    assert "Traceback" not in result.output


def test_the_plan_is_the_split_the_shards_make(
    sample_taxonomy: SampleTaxonomy, make_config: MakeConfig, fake_teacher: type[FakeTeacher], tmp_path: Path
) -> None:
    config = make_config(sample_taxonomy, shards=2)
    result = CliRunner().invoke(
        main, ["generate", "--config", str(_write(config, tmp_path / "c.json")), "--plan"]
    )
    assert result.exit_code == 0, result.output
    plan = shards.ShardPlan.model_validate_json(result.stdout)
    assert (plan.leaves, plan.work) == (3, sum(s.work for s in plan.shards))
    for index in range(2):
        generate_shard(config, index, teacher=fake_teacher())
    outcomes = [
        shards.ShardOutcome.model_validate_json(shards.outcome_path(_output(config), i).read_text())
        for i in range(2)
    ]
    assert [sorted(o.leaves) for o in outcomes] == [s.leaves for s in plan.shards]
