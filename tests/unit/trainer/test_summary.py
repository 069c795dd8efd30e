from __future__ import annotations

from pathlib import Path

from labtune.api.tuning_job_types import CheckpointRecord, TrainingMetrics, TuningOutput
from labtune.contract import SUMMARY_LIMIT_BYTES
from labtune.contract.train import PhaseSummary, TrainSummary
from labtune.trainer.phases import final_metrics
from labtune.trainer.trainer_cli import _write_termination_log


def test_a_summary_too_large_for_the_termination_log_loses_detail_not_outputs(tmp_path: Path) -> None:
    uri = "pvc://artifacts/" + "x" * 300
    summary = TrainSummary(
        output=TuningOutput(adapter=f"{uri}/adapter", adapter_sha256="a" * 64),
        metrics=TrainingMetrics(loss=1.0),
        steps=80,
        checkpoints=[CheckpointRecord(phase=f"phase-{n}", step=10, uri=f"{uri}/{n}") for n in range(8)],
        phases=[PhaseSummary(name=f"phase-{n}" + "y" * 50, steps=10) for n in range(8)],
    )
    path = tmp_path / "termination-log"
    _write_termination_log(summary, str(path))
    assert len(path.read_bytes()) <= SUMMARY_LIMIT_BYTES
    written = TrainSummary.model_validate_json(path.read_text())
    assert written.output == summary.output
    assert written.steps == 80
    assert written.phases == []


def test_an_unwritable_termination_log_is_not_a_failure(tmp_path: Path) -> None:
    summary = TrainSummary(output=TuningOutput(), metrics=TrainingMetrics())
    _write_termination_log(summary, str(tmp_path / "missing-dir" / "log"))


def test_a_phase_shorter_than_logging_steps_still_reports_its_loss() -> None:
    # What transformers' Trainer logs for 3 steps with logging_steps=10 and an evaluation at the end.
    history = [
        {"eval_loss": 2.25, "epoch": 1.0, "step": 3},
        {"train_runtime": 4.1, "train_loss": 2.5, "epoch": 1.0, "step": 3},
    ]
    metrics = final_metrics(history)
    assert (metrics.loss, metrics.eval_loss, metrics.learning_rate) == (2.5, 2.25, None)
    logged = [{"loss": 2.0, "learning_rate": 1e-4, "step": 10}, *history]
    assert final_metrics(logged).loss == 2.0  # the last logged loss, not the run's mean
