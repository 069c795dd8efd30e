"""Records read from JSONL files, validated line by line: training samples (labtune.contract.records:
the generator's output and InstructLab SDG's `knowledge_train_msgs` / `skills_train_msgs` files)
and evaluation examples (labtune.contract.evaluate's EvalExample and ChoiceExample). No torch
here: `labtune train` and `labtune evaluate` read them before importing it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from labtune.contract import ConfigError, resolve_artifact
from labtune.contract.evaluate import Benchmark, ChoiceExample, EvalExample, Examples, MultipleChoiceBenchmark
from labtune.contract.records import Record

RecordT = TypeVar("RecordT", bound=BaseModel)
ExampleT = TypeVar("ExampleT", EvalExample, ChoiceExample)


def read_records(path: Path, model: type[RecordT], noun: str) -> list[tuple[int, RecordT]]:
    """Every record of a JSONL file with its line number (blank lines skipped); an unreadable
    file, a bad line or a file without records (`noun` in the message) is a ConfigError naming
    the file (and line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(f"dataset {path}: {reason}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((number, model.model_validate(json.loads(line))))
        except json.JSONDecodeError as error:
            raise ConfigError(f"dataset {path} line {number}: not JSON: {error.msg}") from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            reason = first["msg"].removeprefix("Value error, ")
            detail = f"{where}: {reason}" if where else reason
            raise ConfigError(f"dataset {path} line {number}: {detail}") from None
    if not records:
        raise ConfigError(f"dataset {path} has no {noun}")
    return records


def read_samples(path: Path) -> list[Record]:
    """Every training sample of a JSONL file (see read_records)."""
    return [sample for _, sample in read_records(path, Record, "samples")]


def _unique_ids(path: Path, records: list[tuple[int, ExampleT]]) -> list[ExampleT]:
    """The records, each id once: the results name examples by id."""
    first: dict[str, int] = {}
    for number, example in records:
        seen = first.setdefault(example.id, number)
        if seen != number:
            raise ConfigError(f"dataset {path} line {number}: id {example.id!r} repeats line {seen}")
    return [example for _, example in records]


def read_examples(path: Path) -> list[EvalExample]:
    """Every question of a reference benchmark's JSONL file (see read_records), ids unique."""
    return _unique_ids(path, read_records(path, EvalExample, "examples"))


def read_choices(path: Path) -> list[ChoiceExample]:
    """Every question of a multiple-choice benchmark's JSONL file (see read_records), ids unique."""
    return _unique_ids(path, read_records(path, ChoiceExample, "multiple-choice examples"))


def read_benchmark(benchmark: Benchmark, artifact_root: str) -> Examples:
    """A benchmark's questions, read and checked: bad evaluation data fails before any model is
    loaded (and, in `labtune train`, before training), not after it."""
    path = resolve_artifact(benchmark.dataset, artifact_root)
    if not path.exists():
        raise ConfigError(f"dataset {path}: {os.strerror(errno.ENOENT)}")  # as reading it would say
    if isinstance(benchmark, MultipleChoiceBenchmark):
        return read_choices(path)
    return read_examples(path)
