from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from labtune.trainer.launcher import STOP_FILE_ENV
from labtune.trainer.preemption import PreemptionCallback, StopRequest


def test_sigterm_requests_a_stop_only_while_installed() -> None:
    stop = StopRequest()
    previous = signal.getsignal(signal.SIGTERM)
    with stop.installed():
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    assert signal.getsignal(signal.SIGTERM) == previous


def test_the_launchers_stop_file_requests_a_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STOP_FILE_ENV, str(tmp_path / "stop"))
    stop = StopRequest()
    assert not stop.requested
    (tmp_path / "stop").touch()
    assert stop.requested


@pytest.mark.parametrize("scheduled_evaluation", [False, True])
def test_a_stop_saves_at_the_end_of_the_step_and_evaluates_only_when_scheduled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheduled_evaluation: bool
) -> None:
    monkeypatch.setenv(STOP_FILE_ENV, str(tmp_path / "stop"))
    (tmp_path / "stop").touch()
    callback = PreemptionCallback(StopRequest())
    control = TrainerControl(should_evaluate=scheduled_evaluation)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    callback.on_step_end(args, TrainerState(global_step=3, max_steps=10), control)
    assert callback.preempted
    assert control.should_save
    assert control.should_training_stop
    assert control.should_evaluate == scheduled_evaluation
