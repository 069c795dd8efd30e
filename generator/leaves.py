"""The leaves of a taxonomy tree: which files count, what type each is, and path filters."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from labtune.contract.common import LeafType

LEAF_FILE = "qna.yaml"
TAXONOMY_FOLDERS = ("knowledge", "compositional_skills")


def is_taxonomy_path(path: str) -> bool:
    """True for a path (relative to the root, POSIX) inside one of the taxonomy folders."""
    parts = PurePosixPath(path).parts
    return len(parts) > 1 and parts[0] in TAXONOMY_FOLDERS


def is_leaf(path: str) -> bool:
    """Only files named exactly `qna.yaml` inside the taxonomy folders are leaves."""
    return is_taxonomy_path(path) and PurePosixPath(path).name == LEAF_FILE


def is_misnamed_leaf(path: str) -> bool:
    """A `qna.yml` (or another spelling of qna.yaml) that InstructLab skips with a warning."""
    name = PurePosixPath(path).name
    return is_taxonomy_path(path) and name != LEAF_FILE and name.lower() in ("qna.yaml", "qna.yml")


def walk(root: Path) -> list[str]:
    """Every file under the taxonomy folders of `root`, as sorted POSIX paths relative to it."""
    found: list[str] = []
    for folder in TAXONOMY_FOLDERS:
        base = root / folder
        if base.is_dir():
            found.extend(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())
    return sorted(found)


def leaf_type(path: str, contents: Mapping[str, Any]) -> LeafType:
    """Knowledge by folder; a compositional skill is grounded when a seed example has a context."""
    if PurePosixPath(path).parts[0] == "knowledge":
        return "knowledge"
    seeds = contents.get("seed_examples") or []
    grounded = any(isinstance(seed, Mapping) and seed.get("context") for seed in seeds)
    return "grounded_skill" if grounded else "freeform_skill"


def _matches(path: str, globs: Iterable[str]) -> bool:
    # `**` matches any depth; fnmatch's `*` already crosses `/`, so `a/**` also matches `a/b/c`.
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in globs)


def select(paths: Iterable[str], include: list[str], exclude: list[str]) -> list[str]:
    """The paths matching an include glob (all when none is given) and no exclude glob."""
    return [p for p in paths if (not include or _matches(p, include)) and not _matches(p, exclude)]
