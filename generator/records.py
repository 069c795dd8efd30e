"""Dataset records in the format InstructLab's training library reads, and JSONL files of them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from labtune.contract import ConfigError


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class SampleMetadata(BaseModel):
    """Where a sample came from. Every record carries every key, so the file has one schema for
    datasets' JSON loader."""

    source: str
    """`generated`, `knowledge_replay`, or the URI of a replay dataset."""
    leaf: str = ""
    leaf_type: str = ""
    pipeline: str = ""
    teacher: str = ""
    taxonomy_commit: str = ""


class Record(BaseModel):
    """One training sample: `unmask` trains on the whole sequence (phase-1 knowledge), otherwise
    only on the assistant turns."""

    id: str
    messages: list[Message]
    metadata: SampleMetadata
    unmask: bool = False


class ReplayRecord(BaseModel):
    """A record of a precomputed replay dataset: only the messages are required."""

    id: str | None = None
    messages: list[Message]
    unmask: bool = False


def record_id(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def write_jsonl(path: Path, records: Iterable[BaseModel]) -> str:
    """Writes records atomically (a restarted run never sees half a file) and returns the sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    digest = hashlib.sha256()
    with temporary.open("wb") as out:
        for record in records:
            line = (json.dumps(record.model_dump(mode="json"), ensure_ascii=False) + "\n").encode()
            digest.update(line)
            out.write(line)
    os.replace(temporary, path)
    return digest.hexdigest()


def read_replay(path: Path, name: str) -> list[ReplayRecord]:
    """A replay dataset; a bad line is a configuration error naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"replay dataset {name}: {error.strerror}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(ReplayRecord.model_validate_json(line))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(map(str, first["loc"])) or "(record)"
            raise ConfigError(f"replay dataset {name}:{number}: {where}: {first['msg']}") from None
    return records
