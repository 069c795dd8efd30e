"""JSONL files of the generator: written atomically with their digest, and replay datasets read
line by line (records in the pod contract's format, labtune.contract.records)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from labtune.contract import ConfigError
from labtune.contract.records import Record


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


def read_replay(path: Path, name: str) -> list[Record]:
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
            records.append(Record.model_validate_json(line))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(map(str, first["loc"])) or "(record)"
            reason = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"replay dataset {name}:{number}: {where}: {reason}") from None
    return records
