"""Per-leaf checkpoints in the output folder: the rows after each finished stage, and the
leaf's samples once it is done. A restarted run skips finished leaves and resumes a partial
one after its last finished stage. A checkpoint made from other inputs is discarded."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from labtune.contract.common import LeafType
from labtune.contract.records import record_id
from labtune.generator.engine import Row, StageCount
from labtune.generator.jsonl_files import write_jsonl

SampleT = TypeVar("SampleT", bound=BaseModel)


class LeafResult(BaseModel):
    """A finished leaf: counts per stage and the samples kept."""

    path: str
    leaf_type: LeafType
    stages: list[StageCount]
    samples: int


class _Progress(BaseModel):
    fingerprint: str
    stages: list[StageCount] = []


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class _RowLine(BaseModel):
    row: Row


class LeafCheckpoint:
    def __init__(self, root: Path, leaf: str, fingerprint: str) -> None:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", leaf).strip("_")[-80:]
        self.folder = root / f"{slug}-{record_id(leaf)[:8]}"
        self.fingerprint = fingerprint
        self._progress_file = self.folder / "progress.json"
        self._result_file = self.folder / "result.json"
        self._samples_file = self.folder / "samples.jsonl"
        self._progress = self._load()

    def _load(self) -> _Progress:
        if self._progress_file.is_file():
            progress = _Progress.model_validate_json(self._progress_file.read_text())
            if progress.fingerprint == self.fingerprint:
                return progress
            shutil.rmtree(self.folder)  # made from other inputs: start the leaf over
        self.folder.mkdir(parents=True, exist_ok=True)
        progress = _Progress(fingerprint=self.fingerprint)
        _write_atomic(self._progress_file, progress.model_dump_json())
        return progress

    def result(self) -> LeafResult | None:
        """The finished leaf, or None."""
        if not self._result_file.is_file():
            return None
        return LeafResult.model_validate_json(self._result_file.read_text())

    def samples(self, model: type[SampleT]) -> list[SampleT]:
        """The finished leaf's output: training records or multiple-choice questions."""
        lines = self._samples_file.read_text(encoding="utf-8").splitlines()
        return [model.model_validate_json(line) for line in lines if line]

    def resume(self) -> tuple[list[StageCount], list[Row]] | None:
        """Counts of the finished stages and the rows after the last one; None at the start."""
        if not self._progress.stages:
            return None
        rows_file = self._stage_file(len(self._progress.stages) - 1)
        rows = [
            json.loads(line)["row"] for line in rows_file.read_text(encoding="utf-8").splitlines() if line
        ]
        return list(self._progress.stages), rows

    def save_stage(self, count: StageCount, rows: list[Row]) -> None:
        index = len(self._progress.stages)
        write_jsonl(self._stage_file(index), (_RowLine(row=row) for row in rows))
        self._progress.stages.append(count)
        _write_atomic(self._progress_file, self._progress.model_dump_json())

    def finish(self, result: LeafResult, samples: Sequence[BaseModel]) -> None:
        write_jsonl(self._samples_file, samples)
        _write_atomic(self._result_file, result.model_dump_json())

    def _stage_file(self, index: int) -> Path:
        return self.folder / f"stage-{index:03d}.jsonl"
