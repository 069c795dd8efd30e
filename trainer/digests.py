"""sha256 digests of output folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

SUMS = "SHA256SUMS"
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def seal_folder(folder: Path) -> str:
    """Writes SHA256SUMS (every file, `sha256sum -c` format) into the folder and returns the
    sha256 of that listing: one digest for the weights, config and tokenizer together, checked
    with `sha256sum -c SHA256SUMS && sha256sum SHA256SUMS`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SUMS)
    listing = "".join(f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in files)
    (folder / SUMS).write_text(listing)
    return hashlib.sha256(listing.encode()).hexdigest()
