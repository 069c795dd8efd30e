"""The content-addressed cache of finished leaves, shared by the SyntheticDataRuns on one artifact
volume: a later run reuses the samples of every leaf whose inputs (the key: leaf content and
document chunks, pipeline, teacher, scale, seed, held-out seeds) match and asks the teacher only for
the rest.

An entry is a folder `<root>/<key[:2]>/<key>/` with `entry.json` (the leaf's stage counts and the
sha256 of its samples) and `samples.jsonl`. It is written under `tmp/` and renamed into place, so a
reader sees a whole entry or none, never half of one; entries are never changed after that, so two
runs writing the same key at once leave the first one's (a deterministic teacher made them equal).
Eviction renames an entry out of place before deleting it: a reader that loses the race gets a
miss, never a torn read. The last use of an entry is its `entry.json`'s mtime: the least recently
used entries go first when the cache outgrows its bound."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from labtune.generator.checkpoints import LeafResult
from labtune.generator.jsonl_files import write_jsonl

log = logging.getLogger(__name__)

FORMAT = "labtune-leaf-cache/v1"
"""Part of every key: a change of what an entry holds changes every key."""

STALE_TMP_SECONDS = 6 * 3600
"""A folder under tmp/ this old was left by a pod that died writing it."""

SampleT = TypeVar("SampleT", bound=BaseModel)


class _Entry(BaseModel):
    format: str
    key: str
    result: LeafResult
    samples_sha256: str


def cache_key(*parts: str) -> str:
    """The key of a leaf's flow from the strings that decide its output."""
    return hashlib.sha256("\0".join((FORMAT, *parts)).encode()).hexdigest()


def _read_entry(folder: Path) -> tuple[bytes, bytes]:
    """entry.json and samples.jsonl of one entry: both opened through the folder's descriptor, so
    that an entry replaced meanwhile (policy Regenerate) cannot lend one file to another's."""
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _read_at(directory, "entry.json"), _read_at(directory, "samples.jsonl")
    finally:
        os.close(directory)


def _read_at(directory: int, name: str) -> bytes:
    with open(os.open(name, os.O_RDONLY, dir_fd=directory), "rb") as file:
        return file.read()


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


@dataclass
class LeafCache:
    """The cache under `root`; `read` False (policy Regenerate) misses every leaf and replaces
    the entries with what the teacher writes now; `max_bytes` bounds its size after a run."""

    root: Path
    max_bytes: int
    read: bool = True
    used: set[str] = field(default_factory=set)
    """Keys this run read or wrote: never evicted by its own prune."""
    hits: set[str] = field(default_factory=set)
    """Keys this run read."""

    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str, model: type[SampleT]) -> tuple[LeafResult, list[SampleT]] | None:
        """The leaf's stage counts and samples, or None (a miss: absent, evicted while read, or
        damaged; a damaged entry is evicted)."""
        if not self.read:
            return None
        folder = self._folder(key)
        try:
            entry_json, data = _read_entry(folder)
            entry = _Entry.model_validate_json(entry_json)
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as error:
            log.warning("leaf cache entry %s is unreadable (%s): evicting it", key, error)
            self._evict(folder)
            return None
        if entry.key != key or hashlib.sha256(data).hexdigest() != entry.samples_sha256:
            log.warning("leaf cache entry %s does not match its digest: evicting it", key)
            self._evict(folder)
            return None
        samples = [model.model_validate_json(line) for line in data.decode().splitlines() if line]
        self._touch(folder / "entry.json")
        self.used.add(key)
        self.hits.add(key)
        return entry.result, samples

    def put(self, key: str, result: LeafResult, samples: Sequence[BaseModel]) -> None:
        """Stores a finished leaf; an entry for the key that exists stays (it holds the same
        samples), unless this run regenerates."""
        self.used.add(key)
        folder = self._folder(key)
        if folder.exists():
            if self.read:
                self._touch(folder / "entry.json")
                return
            self._evict(folder)
        temporary = self.root / "tmp" / f"{key}.{uuid.uuid4().hex}"
        temporary.mkdir(parents=True)
        digest = write_jsonl(temporary / "samples.jsonl", samples)
        entry = _Entry(format=FORMAT, key=key, result=result, samples_sha256=digest)
        (temporary / "entry.json").write_text(entry.model_dump_json())
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(temporary, folder)  # atomic; fails when another run put the key first
        except OSError:
            shutil.rmtree(temporary, ignore_errors=True)

    def prune(self) -> int:
        """Evicts the least recently used entries this run did not use until the cache fits
        `max_bytes`, and stale temporary folders; returns the bytes freed."""
        self._remove_stale_tmp()
        entries: list[tuple[float, int, Path]] = []
        for shard in self.root.iterdir() if self.root.is_dir() else ():
            if shard.name == "tmp" or not shard.is_dir():
                continue
            for folder in shard.iterdir():
                try:
                    entries.append(((folder / "entry.json").stat().st_mtime, _size(folder), folder))
                except FileNotFoundError:
                    continue  # evicted or being evicted by another run
        total = sum(size for _, size, _ in entries)
        freed = 0
        for _, size, folder in sorted(entries):
            if total - freed <= self.max_bytes:
                break
            if folder.name not in self.used and self._evict(folder):
                freed += size
        if freed:
            log.info("leaf cache: evicted %d bytes to stay under %d", freed, self.max_bytes)
        return freed

    def _evict(self, folder: Path) -> bool:
        trash = self.root / "tmp" / f"evicted-{folder.name}.{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return False  # another run evicted it first
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _remove_stale_tmp(self) -> None:
        tmp = self.root / "tmp"
        now = time.time()
        for folder in tmp.iterdir() if tmp.is_dir() else ():
            try:
                if now - folder.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                continue

    @staticmethod
    def _touch(path: Path) -> None:
        # Evicted since it was read: the samples read are whole all the same.
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
