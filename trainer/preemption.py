"""Preemption: SIGTERM (eviction, preemption, a deleted pod) asks training to stop; the current
optimizer step finishes, a checkpoint is saved and the process exits with EXIT_PREEMPTED, so the
retried pod resumes from it."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from labtune.trainer.launcher import STOP_FILE_ENV

log = logging.getLogger(__name__)


class Preempted(Exception):
    """Training stopped on request after saving a checkpoint (an evaluation: between batches)."""


class StopRequest:
    """Whether this process was asked to stop: by SIGTERM, or by the launcher's stop file."""

    def __init__(
        self, announcement: str = "SIGTERM: saving a checkpoint after the current step, then exiting"
    ) -> None:
        self._announcement = announcement
        """Logged on the first SIGTERM."""
        self._signalled = False
        stop_file = os.environ.get(STOP_FILE_ENV)
        self._stop_file = Path(stop_file) if stop_file else None

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handles SIGTERM while in the block (then restores the previous handler)."""
        previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._signalled:
            log.warning("%s", self._announcement)
        self._signalled = True

    @property
    def requested(self) -> bool:
        return self._signalled or (self._stop_file is not None and self._stop_file.exists())


class PreemptionCallback(TrainerCallback):
    """Turns a stop request into save-and-stop at the end of the optimizer step. Every process
    stops at the same step: the request is or-ed across processes."""

    def __init__(self, request: StopRequest) -> None:
        self.request = request
        self.preempted = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> TrainerControl:
        if _on_any_process(self.request.requested, args.device):
            self.preempted = True
            control.should_save = True  # evaluated only when the schedule says so
            control.should_training_stop = True
        return control


def _on_any_process(flag: bool, device: torch.device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
