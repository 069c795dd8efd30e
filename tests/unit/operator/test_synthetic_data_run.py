"""The SyntheticDataRun's pure builders: what reaches the generator pod's config, and what its
summary puts in status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labtune.api import SyntheticDataRun, Taxonomy
from labtune.api.synthetic_data_run_types import DatasetOutput, GenerationCost, GenerationOutputs
from labtune.contract import write_summary
from labtune.contract.generate import GenerateSummary, LeafCacheConfig
from labtune.operator.runs.run_reconcile import status_patch
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run.synthetic_data_run_builders import (
    CHOICE_PIPELINE_DIR,
    LEAF_CACHE_FOLDER,
    build_generate_config,
    build_generator_children,
    build_mix_job,
)
from labtune.operator.synthetic_data_run.synthetic_data_run_reconcile import SyntheticDataRunKind

TAXONOMY = Taxonomy.model_validate(
    {
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": {"source": {"git": {"url": "https://example.com/t.git"}}},
    }
)


def _run(**spec: Any) -> SyntheticDataRun:
    return SyntheticDataRun.model_validate(
        {
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {
                "taxonomyRef": {"name": "t"},
                "teacher": {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}},
                **spec,
            },
        }
    )


def _config(run: SyntheticDataRun) -> Any:
    return build_generate_config(run, TAXONOMY, "a" * 40, "pvc://claim/out", OperatorSettings())


def test_the_held_out_setting_reaches_the_pod() -> None:
    assert _config(_run(evaluation={"heldOutSeeds": 2})).evaluation.held_out_seeds == 2
    fraction = _config(_run(evaluation={"heldOutSeedFraction": 0.25})).evaluation
    assert (fraction.held_out_seeds, fraction.held_out_seed_fraction) == (0, 0.25)
    default = _config(_run()).evaluation
    assert (default.held_out_seeds, default.held_out_seed_fraction) == (0, None)


def _dataset(name: str, samples: int, digit: str) -> DatasetOutput:
    return DatasetOutput(uri=f"pvc://claim/out/{name}.jsonl", samples=samples, sha256=digit * 64)


def test_the_evaluation_dataset_is_recorded_in_status(tmp_path: Path) -> None:
    outputs = GenerationOutputs(
        knowledge=_dataset("knowledge", 10, "a"),
        skills=_dataset("skills", 20, "b"),
        evaluation=_dataset("evaluation", 5, "e"),
    )
    summary = GenerateSummary(taxonomy_commit="a" * 40, teacher_model="m", outputs=outputs)
    status = status_patch(
        SyntheticDataRunKind().finished(write_summary(summary, tmp_path / "termination-log")).status
    )
    assert status["outputs"]["evaluation"] == {
        "uri": "pvc://claim/out/evaluation.jsonl",
        "samples": 5,
        "sha256": "e" * 64,
    }
    assert set(status["outputs"]) == {"knowledge", "skills", "evaluation"}


def test_multiple_choice_questions_reach_the_pod_with_their_pipeline() -> None:
    assert _config(_run()).multiple_choice is None
    builtin = _config(_run(evaluation={"multipleChoice": {}})).multiple_choice
    assert builtin.questions_per_chunk == 3
    assert builtin.pipeline.builtin == "multiple-choice"
    custom = _run(
        evaluation={
            "heldOutSeeds": 1,
            "multipleChoice": {
                "questionsPerChunk": 5,
                "pipeline": {"configMapRef": {"name": "mcq", "key": "p.yaml"}},
            },
        }
    )
    config = _config(custom)
    assert config.evaluation.held_out_seeds == 1
    assert config.multiple_choice.questions_per_chunk == 5
    assert config.multiple_choice.pipeline.path == f"{CHOICE_PIPELINE_DIR}/pipeline.yaml"
    _, job = build_generator_children(
        {
            "metadata": {"name": "r", "namespace": "ns", "uid": "u"},
            "kind": "SyntheticDataRun",
            "apiVersion": "labtune.io/v1alpha1",
        },
        custom,
        TAXONOMY,
        config,
        OperatorSettings(),
    )
    pod = job["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == CHOICE_PIPELINE_DIR)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "mcq"
    assert volume["configMap"]["items"] == [{"key": "p.yaml", "path": "pipeline.yaml"}]


def test_the_multiple_choice_dataset_is_recorded_in_status(tmp_path: Path) -> None:
    outputs = GenerationOutputs(
        knowledge=_dataset("knowledge", 10, "a"), evaluation_choices=_dataset("evaluation-choices", 7, "c")
    )
    summary = GenerateSummary(taxonomy_commit="a" * 40, teacher_model="m", outputs=outputs)
    status = status_patch(
        SyntheticDataRunKind().finished(write_summary(summary, tmp_path / "termination-log")).status
    )
    assert status["outputs"]["evaluationChoices"]["samples"] == 7


def test_the_leaf_cache_is_on_the_output_claim_with_the_policy_and_bound() -> None:
    settings = OperatorSettings(leaf_cache_max_bytes=123)
    run = _run()
    cache = build_generate_config(run, TAXONOMY, "a" * 40, "pvc://models/out/r", settings).cache
    assert cache == LeafCacheConfig(uri=f"pvc://models/{LEAF_CACHE_FOLDER}", reuse=True, max_bytes=123)
    assert _config(_run(cache={"policy": "Regenerate"})).cache.reuse is False
    assert _config(_run(cache={"policy": "Disabled"})).cache is None
    # The vLLM sidecar serves every model as "teacher": the model's URI tells cached leaves apart.
    sidecar = _config(_run(teacher={"model": {"uri": "pvc://models/teacher-7b", "gpus": 1}}))
    assert (sidecar.teacher.model, sidecar.teacher.identity) == ("teacher", "pvc://models/teacher-7b")


def test_the_run_cost_is_recorded_and_reuse_is_told_in_the_event(tmp_path: Path) -> None:
    cost = GenerationCost(leaves_generated=1, leaves_reused=9, prompt_tokens=500, completion_tokens=80)
    summary = GenerateSummary(
        taxonomy_commit="a" * 40,
        teacher_model="m",
        outputs=GenerationOutputs(knowledge=_dataset("knowledge", 10, "a")),
        leaves_done=10,
        leaves_total=10,
        cost=cost,
    )
    finished = SyntheticDataRunKind().finished(write_summary(summary, tmp_path / "termination-log"))
    assert status_patch(finished.status)["cost"] == {
        "leavesGenerated": 1,
        "leavesReused": 9,
        "promptTokens": 500,
        "completionTokens": 80,
    }
    assert finished.note == "; 9 of 10 leaves reused from the leaf cache"


def test_each_shard_pod_serves_its_own_teacher_and_the_mix_pod_none() -> None:
    body = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "u"},
        "kind": "SyntheticDataRun",
        "apiVersion": "labtune.io/v1alpha1",
    }
    run = _run(teacher={"model": {"uri": "pvc://models/teacher-7b", "gpus": 2}}, parallelism=4)
    config = _config(run)
    _, job = build_generator_children(body, run, TAXONOMY, config, OperatorSettings())
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 4)
    pod = job["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]  # in the template: one per pod, so 4 pods x 2 GPUs at once
    assert sidecar["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    mix = build_mix_job(body, run, TAXONOMY, config.output, OperatorSettings())
    mix_pod = mix["spec"]["template"]["spec"]
    assert "initContainers" not in mix_pod
    assert "nvidia.com/gpu" not in json.dumps(mix_pod)  # no teacher: no GPU, no toleration
    assert mix_pod["containers"][0]["args"][-1] == "--mix"
    config_maps = [
        {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v} for spec in (pod, mix_pod)
    ]
    assert config_maps[0] == config_maps[1] == {"r-generate"}  # the shards' config, revision pinned
