"""The output folder: where checkpoints, phase results and the final outputs live, and how they
are written so that nothing half-written is ever taken for a result.

    <output>/config.json                  the config of the run (a restart must match it)
    <output>/phases/<phase>/checkpoint-N/ Trainer checkpoints; complete once they hold COMPLETE
    <output>/phases/<phase>/result.json   the phase is done: its best checkpoint and counts
    <output>/adapter/                     the adapter (LoRA, QLoRA) of the best checkpoint
    <output>/model/                       the full or merged model
    <output>/summary.json                 the run is done: the termination-log summary
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from labtune.api.tuning_job_types import TrainingMetrics
from labtune.contract.train import PhaseSummary

COMPLETE = "labtune-complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TEMPORARY_PREFIX = ".tmp-"


class PhaseResult(BaseModel):
    """`result.json` of a finished phase."""

    best_checkpoint: str
    """Folder name of the best checkpoint in the phase folder."""
    best_step: int
    best_eval_loss: float | None = None
    metrics: TrainingMetrics
    """The phase's last metrics."""
    summary: PhaseSummary


@dataclass(frozen=True)
class Layout:
    root: Path
    uri: str
    """The root as the artifact URI the config named, for URIs in the summary."""

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        return self.root / "model"

    def phase(self, name: str) -> Path:
        return self.root / "phases" / name

    def phase_result(self, name: str) -> Path:
        return self.phase(name) / "result.json"

    def uri_of(self, path: Path) -> str:
        return f"{self.uri.rstrip('/')}/{path.relative_to(self.root).as_posix()}"

    def temporary(self, name: str) -> Path:
        """A scratch path next to the outputs, published with `publish`."""
        return self.root / f"{_TEMPORARY_PREFIX}{name}-{uuid.uuid4().hex[:8]}"

    @property
    def starts(self) -> Path:
        """How many times a process started this run (one line per start): restarts = lines - 1."""
        return self.root / "starts"

    def count_start(self) -> int:
        """Records one more start of the run; returns how many restarts came before this one."""
        with self.starts.open("a") as out:
            out.write("start\n")
        return len(self.starts.read_text().splitlines()) - 1

    def remove_temporaries(self) -> None:
        """Leftovers of a run killed while writing."""
        for path in self.root.glob(f"{_TEMPORARY_PREFIX}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def publish(temporary: Path, final: Path) -> None:
    """Moves a fully written file or folder into place in one rename (replacing an old one)."""
    if final.is_dir():
        shutil.rmtree(final)
    os.replace(temporary, final)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{_TEMPORARY_PREFIX}{path.name}")
    temporary.write_text(text)
    os.replace(temporary, path)


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(phase: Path) -> list[Path]:
    """A phase's complete checkpoints, oldest first."""
    found = [
        p for p in phase.glob("checkpoint-*") if checkpoint_step(p) is not None and (p / COMPLETE).exists()
    ]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def remove_incomplete_checkpoints(phase: Path) -> None:
    """Checkpoints a killed process left half-written (no COMPLETE marker)."""
    for path in phase.glob("checkpoint-*"):
        if path.is_dir() and not (path / COMPLETE).exists():
            shutil.rmtree(path)
