"""Records read from JSONL files, validated line by line: training samples in the messages format
(the generator's output and InstructLab SDG's `knowledge_train_msgs` / `skills_train_msgs` files)
and evaluation examples (labtune.contract.evaluate's EvalExample and ChoiceExample). No torch
here: `labtune train` and `labtune evaluate` read them before importing it."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labtune.contract import ConfigError, resolve_artifact
from labtune.contract.evaluate import Benchmark, ChoiceExample, EvalExample, Examples, MultipleChoiceBenchmark

RecordT = TypeVar("RecordT", bound=BaseModel)
ExampleT = TypeVar("ExampleT", EvalExample, ChoiceExample)

# InstructLab SDG's phase-1 knowledge records carry one `pretraining` message holding the whole
# exchange as "<|user|>\n…\n<|assistant|>\n…" (or Granite's start_of_role form); InstructLab's
# training library unrolls it into user/assistant turns trained whole, and so does this.
_PRETRAINING_TURN = re.compile(r"<\|(?:start_of_role\|>)?(user|assistant)(?:<\|end_of_role)?\|>\n")
_PRETRAINING_END = ("<|endoftext|>", "<|end_of_text|>")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class Sample(BaseModel):
    """One conversation. `unmask` trains on every message but the system prompt; otherwise only
    the assistant turns are trained. Other keys (id, metadata) are carried along unread."""

    model_config = ConfigDict(extra="ignore")

    messages: list[Message] = Field(min_length=1)
    unmask: bool = False

    @model_validator(mode="before")
    @classmethod
    def _unroll_pretraining(cls, data: object) -> object:
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            return data
        messages = data["messages"]
        if not any(isinstance(m, dict) and m.get("role") == "pretraining" for m in messages):
            return data
        unrolled: list[object] = []
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "pretraining":
                unrolled.extend(_pretraining_turns(str(message.get("content", ""))))
            else:
                unrolled.append(message)
        return {**data, "messages": unrolled, "unmask": True}

    @model_validator(mode="after")
    def _has_assistant_turn(self) -> Sample:
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError("the sample has no assistant turn")
        return self


def _pretraining_turns(text: str) -> list[dict[str, str]]:
    parts = _PRETRAINING_TURN.split(text)
    turns = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        for end in _PRETRAINING_END:
            content = content.replace(end, "")
        turns.append({"role": role, "content": content.removesuffix("\n")})
    return turns


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


def read_samples(path: Path) -> list[Sample]:
    """Every training sample of a JSONL file (see read_records)."""
    return [sample for _, sample in read_records(path, Sample, "samples")]


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
