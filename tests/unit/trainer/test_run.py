"""Whole runs of `labtune train` on the tiny random Llama: phases, outputs, restarts."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from labtune.contract import EXIT_CONFIG_ERROR, EXIT_PREEMPTED
from labtune.contract.train import TrainSummary
from labtune.trainer.digests import SUMS
from labtune.trainer.launcher import STOP_FILE_ENV
from labtune.trainer.layout import COMPLETE, Layout, write_text_atomic
from labtune.trainer.preemption import Preempted, StopRequest
from labtune.trainer.runner import await_summary
from labtune.trainer.trainer_cli import run

ADAPTER = "adapter_model.safetensors"


@pytest.fixture
def two_phases(tiny_model: Path, tiny_dataset: Path) -> dict[str, Any]:
    phase = {"maxSeqLen": 64, "effectiveBatchSize": 8, "learningRate": 0.01}
    return {
        "baseModel": {"uri": str(tiny_model)},
        "datasets": {"knowledge": str(tiny_dataset), "skills": str(tiny_dataset)},
        "phases": [
            {"name": "knowledge", "dataset": "knowledge", **phase},
            {"name": "skills", "dataset": "skills", "epochs": 2, **phase},
        ],
    }


def _stop_after_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop request that arrives once training has started: the request is read before the
    phase starts, then at the end of each optimizer step."""
    answers = iter([False])
    monkeypatch.setattr(StopRequest, "requested", property(lambda self: next(answers, True)))


def _summary(tmp_path: Path) -> TrainSummary:
    return TrainSummary.model_validate_json((tmp_path / "termination-log").read_text())


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / ADAPTER)


def test_phases_run_in_order_and_produce_adapter_merged_model_and_summary(
    tmp_path: Path, write_config: Callable[..., Path], two_phases: dict[str, Any]
) -> None:
    assert run(write_config(**two_phases, mergeAdapter=True)) == 0
    out = tmp_path / "out"
    summary = _summary(tmp_path)
    # 18 training samples, micro batches of 4, 8 per step: 3 steps per epoch.
    assert [(p.name, p.steps, p.train_samples, p.eval_samples) for p in summary.phases] == [
        ("knowledge", 3, 18, 6),
        ("skills", 6, 18, 6),
    ]
    assert summary.steps == 9
    assert summary.tokens == sum(p.tokens for p in summary.phases) > 0
    assert summary.output.adapter == str(out / "adapter")
    assert summary.output.model == str(out / "model")
    assert summary.metrics.loss is not None
    assert summary.metrics.tokens_per_second
    assert [c.phase for c in summary.checkpoints] == ["knowledge", "skills"]
    assert summary.best_eval_loss == summary.checkpoints[-1].eval_loss
    assert (out / "summary.json").exists()
    for folder, digest in (
        (out / "adapter", summary.output.adapter_sha256),
        (out / "model", summary.output.model_sha256),
    ):
        import hashlib

        assert hashlib.sha256((folder / SUMS).read_bytes()).hexdigest() == digest
    assert (out / "model" / "model.safetensors").exists()
    assert not any(p.name.startswith(".tmp-") for p in out.iterdir())


def test_the_next_phase_starts_from_the_best_checkpoint_of_the_one_before(
    tmp_path: Path, write_config: Callable[..., Path], two_phases: dict[str, Any]
) -> None:
    two_phases["phases"][1]["learningRate"] = 1e-9  # the skills phase barely moves the adapter
    assert run(write_config(**two_phases)) == 0
    knowledge = _summary(tmp_path).checkpoints[0]
    start, final = _adapter(Path(knowledge.uri)), _adapter(tmp_path / "out" / "adapter")
    assert start.keys() == final.keys()
    for name in start:
        torch.testing.assert_close(final[name], start[name], atol=1e-6, rtol=0)
    assert any(t.abs().sum() > 0 for n, t in start.items() if "lora_B" in n)  # it did train


def test_a_finished_run_started_again_reports_its_summary_without_training(
    tmp_path: Path, write_config: Callable[..., Path], two_phases: dict[str, Any]
) -> None:
    config = write_config(**two_phases)
    assert run(config) == 0
    first = (tmp_path / "termination-log").read_text()
    shutil.rmtree(tmp_path / "out" / "phases")  # would be needed to train again
    (tmp_path / "termination-log").unlink()
    assert run(config) == 0
    assert (tmp_path / "termination-log").read_text() == first


def test_a_stop_request_saves_a_checkpoint_and_a_restart_ends_where_an_uninterrupted_run_does(
    tmp_path: Path,
    write_config: Callable[..., Path],
    two_phases: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = write_config(**two_phases, output=str(tmp_path / "reference"))
    assert run(reference) == 0

    _stop_after_first_step(monkeypatch)
    config = write_config(**two_phases)
    assert run(config) == EXIT_PREEMPTED
    knowledge = tmp_path / "out" / "phases" / "knowledge"
    assert [p.name for p in knowledge.glob("checkpoint-*")] == ["checkpoint-1"]
    assert (knowledge / "checkpoint-1" / COMPLETE).exists()
    assert not (tmp_path / "out" / "adapter").exists()

    monkeypatch.undo()
    assert run(config) == 0
    resumed, uninterrupted = (
        _adapter(tmp_path / "out" / "adapter"),
        _adapter(tmp_path / "reference" / "adapter"),
    )
    for name in uninterrupted:
        torch.testing.assert_close(resumed[name], uninterrupted[name])
    assert _summary(tmp_path).steps == 9


def test_a_half_written_checkpoint_is_not_resumed_from(
    tmp_path: Path, write_config: Callable[..., Path], two_phases: dict[str, Any]
) -> None:
    half = tmp_path / "out" / "phases" / "knowledge" / "checkpoint-2"
    half.mkdir(parents=True)
    (half / "trainer_state.json").write_text("{not json")
    assert run(write_config(**two_phases)) == 0
    assert _summary(tmp_path).phases[0].steps == 3


def test_restarting_with_a_different_config_is_a_config_error(
    tmp_path: Path,
    write_config: Callable[..., Path],
    two_phases: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _stop_after_first_step(monkeypatch)
    assert run(write_config(**two_phases)) == EXIT_PREEMPTED
    two_phases["phases"][0]["learningRate"] = 0.02
    assert run(write_config(**two_phases)) == EXIT_CONFIG_ERROR
    assert "holds a run of a different config" in capsys.readouterr().err


def test_a_full_fine_tune_outputs_the_model(
    tmp_path: Path, write_config: Callable[..., Path], two_phases: dict[str, Any]
) -> None:
    two_phases["phases"] = two_phases["phases"][:1]
    assert run(write_config(**two_phases, method={"type": "full"})) == 0
    summary = _summary(tmp_path)
    assert summary.output.adapter is None
    assert summary.output.model == str(tmp_path / "out" / "model")
    files = {p.name for p in (tmp_path / "out" / "model").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", SUMS} <= files
    assert not files & {"optimizer.pt", "trainer_state.json", COMPLETE}
    assert json.loads((tmp_path / "out" / "model" / "config.json").read_text())["model_type"] == "llama"


def test_the_other_processes_wait_for_the_first_ones_summary_without_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rank 0 evaluates and exports alone; a collective barrier there failed after 30 minutes.
    layout = Layout(tmp_path, str(tmp_path))
    polls: list[None] = []

    def sleep(seconds: float) -> None:
        polls.append(None)
        if len(polls) == 3:  # the first process finishes while this one waits
            write_text_atomic(layout.summary, "{}")

    monkeypatch.setattr(time, "sleep", sleep)
    await_summary(layout, StopRequest(), poll_s=0.0)
    assert len(polls) == 3

    stop_file = tmp_path / "stop"
    monkeypatch.setenv(STOP_FILE_ENV, str(stop_file))
    layout.summary.unlink()
    stop_file.touch()  # the pod is stopped meanwhile: this process exits as preempted
    with pytest.raises(Preempted, match="evaluates and exports"):
        await_summary(layout, StopRequest(), poll_s=0.0)
