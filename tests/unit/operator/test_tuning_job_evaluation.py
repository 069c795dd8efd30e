"""The TuningJob's evaluation on the operator's side: which benchmarks reach the trainer's config,
and what a summary with scores and a gate puts in status, in conditions and in the run's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labtune.api import TuningJob
from labtune.api.tuning_job_types import (
    BenchmarkResult,
    ChosenCheckpoint,
    EvalScores,
    EvaluationSpec,
    GateResult,
    TuningEvaluation,
    TuningOutput,
)
from labtune.contract import write_summary
from labtune.contract.evaluate import from_spec
from labtune.contract.train import Datasets, TrainSummary
from labtune.operator.operator_metrics import EvaluationScores
from labtune.operator.runs.run_reconcile import CannotRun, KindCondition, status_patch
from labtune.operator.settings import OperatorSettings
from labtune.operator.tuning_job.tuning_job_builders import build_trainer_plan
from labtune.operator.tuning_job.tuning_job_evaluation import EvaluationDatasets, resolve_evaluation
from labtune.operator.tuning_job.tuning_job_reconcile import TuningJobKind

HELD_OUT = "pvc://claim/datasets/evaluation.jsonl"
CHOICES = "pvc://claim/datasets/evaluation-choices.jsonl"
BOTH: EvaluationDatasets = {"reference": HELD_OUT, "multipleChoice": CHOICES}


def _spec(**fields: Any) -> EvaluationSpec:
    return EvaluationSpec.model_validate(fields)


@pytest.mark.parametrize(
    ("spec", "datasets", "expected"),
    [
        ({}, {"reference": HELD_OUT}, [("held-out", "reference", HELD_OUT)]),
        ({}, {"multipleChoice": CHOICES}, [("multiple-choice", "multipleChoice", CHOICES)]),
        (
            {},
            BOTH,
            [("held-out", "reference", HELD_OUT), ("multiple-choice", "multipleChoice", CHOICES)],
        ),
        ({}, {}, []),
        ({"benchmarks": []}, BOTH, []),
        (
            {"benchmarks": [{"name": "mine", "dataset": "pvc://c/q.jsonl"}]},
            {},
            [("mine", "reference", "pvc://c/q.jsonl")],
        ),
        (
            {
                "benchmarks": [
                    {"name": "a"},
                    {"name": "b", "dataset": "pvc://c/b.jsonl"},
                    {"name": "c", "type": "multipleChoice"},
                ]
            },
            BOTH,
            [
                ("a", "reference", HELD_OUT),
                ("b", "reference", "pvc://c/b.jsonl"),
                ("c", "multipleChoice", CHOICES),
            ],
        ),
    ],
)
def test_benchmarks_reach_the_trainer_with_their_datasets(
    spec: dict[str, Any], datasets: EvaluationDatasets, expected: list[tuple[str, str, str]]
) -> None:
    resolved = resolve_evaluation(_spec(**spec), datasets)
    assert isinstance(resolved, EvaluationSpec)
    assert [(b.name, b.type, b.dataset) for b in resolved.benchmarks or []] == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"gate": {"benchmark": "held-out"}},
            "evaluation.gate names the default benchmark held-out, but the SyntheticDataRun wrote no "
            "dataset for it: set spec.evaluation.heldOutSeeds on it",
        ),
        (
            {"selectBy": {"benchmark": "multiple-choice", "metric": "accuracy"}},
            "evaluation.selectBy names the default benchmark multiple-choice, but the SyntheticDataRun "
            "wrote no dataset for it: set spec.evaluation.multipleChoice on it",
        ),
        (
            {"benchmarks": [{"name": "a", "type": "multipleChoice"}]},
            "benchmark a has no dataset and the SyntheticDataRun wrote no multipleChoice evaluation "
            "dataset: set spec.evaluation.multipleChoice on it",
        ),
    ],
)
def test_a_gate_without_questions_cannot_run(spec: dict[str, Any], message: str) -> None:
    resolved = resolve_evaluation(_spec(**spec), {"reference": HELD_OUT} if "benchmarks" in spec else {})
    assert isinstance(resolved, CannotRun)
    assert resolved.reason == "NoEvaluationDataset"
    assert message in resolved.message


def _evaluation(gate: GateResult | None) -> TuningEvaluation:
    return TuningEvaluation(
        benchmarks=[
            BenchmarkResult(
                name="held-out",
                examples=5,
                base=EvalScores(nll=1.7479, rouge_l=0.1),
                tuned=EvalScores(nll=0.0175, rouge_l=0.9),
            )
        ],
        checkpoint=ChosenCheckpoint(
            phase="skills",
            step=8,
            uri="pvc://claim/models/demo/phases/skills/checkpoint-8",
            selected_by="evalLoss",
            value=0.5,
            candidates=1,
        ),
        gate=gate,
        summary="pvc://claim/models/demo/evaluation/summary.json",
        seconds=12.5,
    )


def _finished(tmp_path: Path, evaluation: TuningEvaluation | None) -> Any:
    summary = TrainSummary(
        output=TuningOutput(adapter="pvc://claim/models/demo/adapter", adapter_sha256="a" * 64),
        metrics={},  # type: ignore[arg-type]
        evaluation=evaluation,
    )
    return TuningJobKind().finished(write_summary(summary, tmp_path / "termination-log"))


def test_without_benchmarks_there_is_no_evaluation_and_no_condition(tmp_path: Path) -> None:
    finished = _finished(tmp_path, None)
    assert "evaluation" not in status_patch(finished.status)
    assert finished.conditions == ()
    assert finished.failure is None
    assert finished.note == ""


def test_scores_without_a_gate_succeed_and_say_base_and_tuned(tmp_path: Path) -> None:
    finished = _finished(tmp_path, _evaluation(None))
    assert finished.failure is None
    assert status_patch(finished.status)["output"]["adapter"] == "pvc://claim/models/demo/adapter"
    assert status_patch(finished.status)["evaluation"]["benchmarks"][0]["tuned"] == {
        "nll": 0.0175,
        "rougeL": 0.9,
    }
    assert status_patch(finished.status)["evaluation"]["checkpoint"]["selectedBy"] == "evalLoss"
    text = "held-out nll 1.7479 → 0.0175 (base → tuned), output from skills step 8 (by evalLoss)"
    assert finished.conditions == (KindCondition("Evaluated", True, "Scored", text),)
    assert finished.note == f"; {text}"


def _gate(improvement: float, passed: bool) -> GateResult:
    return GateResult(
        benchmark="held-out",
        metric="nll",
        base=1.7479,
        tuned=1.7479 - improvement,
        improvement=improvement,
        min_improvement=0.1,
        passed=passed,
    )


def test_a_passed_gate_succeeds_with_the_improvement_in_the_condition(tmp_path: Path) -> None:
    finished = _finished(tmp_path, _evaluation(_gate(1.7304, True)))
    assert finished.failure is None
    assert "output" in status_patch(finished.status)
    (condition,) = finished.conditions
    assert (condition.type, condition.status, condition.reason) == ("Evaluated", True, "GatePassed")
    assert condition.message.endswith("gate held-out/nll improved by 1.7304 (at least 0.1): passed")
    assert status_patch(finished.status)["evaluation"]["gate"]["passed"] is True


def test_a_failed_gate_fails_the_run_and_promotes_no_output(tmp_path: Path) -> None:
    finished = _finished(tmp_path, _evaluation(_gate(0.0001, False)))
    assert "output" not in status_patch(finished.status)  # nothing that deploys status.output picks it up
    assert status_patch(finished.status)["evaluation"]["gate"] == {
        "benchmark": "held-out",
        "metric": "nll",
        "base": 1.7479,
        "tuned": 1.7478,
        "improvement": 0.0001,
        "minImprovement": 0.1,
        "passed": False,
    }
    reason, message = finished.failure
    assert reason == "GateFailed"
    assert message.startswith(
        "the tuned model does not clear the gate and is not promoted: gate held-out/nll improved by "
        "0.0001 (at least 0.1)"
    )
    assert message.endswith("its output stays at pvc://claim/models/demo/adapter for inspection")
    assert finished.conditions == (KindCondition("Evaluated", False, "GateFailed", message),)


def _body(namespace: str, name: str, finished: str, nll: tuple[float, float]) -> dict[str, Any]:
    benchmark = {"name": "held-out", "examples": 3, "base": {"nll": nll[0]}, "tuned": {"nll": nll[1]}}
    return {
        "kind": "TuningJob",
        "metadata": {"namespace": namespace, "name": name},
        "status": {
            "completionTime": finished,
            "evaluation": {
                "benchmarks": [benchmark],
                "checkpoint": {
                    "phase": "skills",
                    "step": 8,
                    "uri": "pvc://c/ck",
                    "selectedBy": "evalLoss",
                    "candidates": 1,
                },
                "summary": "pvc://c/evaluation/summary.json",
                "seconds": 1.0,
            },
        },
    }


def test_the_score_gauge_shows_the_latest_run_per_namespace_and_benchmark() -> None:
    scores = EvaluationScores()
    scores.update(_body("ml", "second", "2026-12-02T10:00:00Z", (1.7, 0.2)))
    scores.update(_body("ml", "first", "2026-12-02T09:00:00Z", (1.7, 1.9)))
    scores.update(_body("other", "only", "2026-12-01T00:00:00Z", (2.0, 1.0)))
    scores.update({"kind": "TuningJob", "metadata": {"namespace": "ml", "name": "running"}, "status": {}})

    def samples() -> dict[tuple[str, ...], float]:
        (family,) = scores.collect()
        assert family.name == "labtune_eval_score"
        return {
            tuple(s.labels[k] for k in ("namespace", "benchmark", "metric", "model")): s.value
            for s in family.samples
        }

    assert samples() == {
        ("ml", "held-out", "nll", "base"): 1.7,
        ("ml", "held-out", "nll", "tuned"): 0.2,
        ("other", "held-out", "nll", "base"): 2.0,
        ("other", "held-out", "nll", "tuned"): 1.0,
    }
    scores.forget("TuningJob", "ml", "second")
    scores.forget("SyntheticDataRun", "other", "only")  # another kind of the same name: not this one
    assert samples()[("ml", "held-out", "nll", "tuned")] == 1.9
    assert ("other", "held-out", "nll", "tuned") in samples()


def test_a_judge_gets_its_key_and_ca_from_secrets_where_the_trainer_reads_them() -> None:
    judge = {
        "endpoint": {
            "url": "https://judge.models:8443/v1",
            "model": "prometheus-8x7b",
            "apiKeySecretRef": {"name": "judge-key", "key": "token"},
            "caSecretRef": {"name": "judge-ca", "key": "ca.pem"},
        },
        "maxConcurrency": 4,
    }
    body = {
        "apiVersion": "labtune.io/v1alpha1",
        "kind": "TuningJob",
        "metadata": {"name": "tj", "namespace": "ml", "uid": "0123456789"},
        "spec": {
            "baseModel": {"uri": "pvc://models/base"},
            "data": {"knowledge": "pvc://data/k.jsonl", "skills": "pvc://data/s.jsonl"},
            "evaluation": {
                "benchmarks": [{"name": "held-out", "dataset": HELD_OUT, "judge": judge}],
                "gate": {"benchmark": "held-out", "metric": "judge", "minImprovement": 0.5},
            },
        },
    }
    job = TuningJob.model_validate(body)
    datasets = Datasets(knowledge="pvc://data/k.jsonl", skills="pvc://data/s.jsonl")
    config, children = build_trainer_plan(body, job, datasets, job.spec.evaluation, OperatorSettings())
    pod = children[-1]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    teacher = from_spec((config.evaluation.benchmarks or [])[0]).judge.teacher  # type: ignore[union-attr]
    (key,) = [e for e in container["env"] if e["name"] == teacher.api_key_env]
    assert key["valueFrom"] == {"secretKeyRef": {"name": "judge-key", "key": "token"}}
    assert teacher.ca_file is not None
    mount = next(m for m in container["volumeMounts"] if teacher.ca_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "judge-ca"
    assert volume["secret"]["items"] == [{"key": "ca.pem", "path": "ca.crt"}]
    assert (teacher.url, teacher.model, teacher.max_concurrency) == (
        "https://judge.models:8443/v1",
        "prometheus-8x7b",
        4,
    )


@pytest.mark.parametrize(
    ("resources", "gpus"),
    [({}, 1), ({"gpusPerNode": 0}, 0), ({"gpusPerNode": 4, "nodes": 2}, 8), ({"nodes": 3}, 3)],
)
def test_gpu_seconds_count_the_spec_defaults(resources: dict[str, Any], gpus: int) -> None:
    assert TuningJobKind().gpus({"resources": resources} if resources else {}) == gpus
