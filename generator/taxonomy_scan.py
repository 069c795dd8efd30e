"""A taxonomy checkout as a whole: its leaves, which of them changed against a base, and the
validation of the ones that matter."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from labtune.api.taxonomy_types import LeafCounts
from labtune.generator import gitrepo, leaves
from labtune.generator.validation import ValidationReport, validate_tree

EMPTY_BASE = "empty"


class TaxonomyScan(BaseModel):
    """Leaves of a checkout (after path filters), the changed ones, and their validation."""

    leaves: list[str]
    changed: list[str]
    report: ValidationReport

    def leaf_counts(self) -> LeafCounts:
        by_type = Counter(f.leaf_type for f in self.report.files if f.leaf_type)
        return LeafCounts(
            knowledge=by_type["knowledge"],
            freeform_skills=by_type["freeform_skill"],
            grounded_skills=by_type["grounded_skill"],
            total=sum(by_type.values()),
        )


def changed_paths(root: Path, base: str) -> list[str]:
    """Taxonomy files that count as changed against `base` (`empty`: every file)."""
    if base == EMPTY_BASE:
        return leaves.walk(root)
    return [p for p in gitrepo.changed_files(root, base) if leaves.is_taxonomy_path(p)]


def scan(
    root: Path,
    *,
    base: str = EMPTY_BASE,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    validate: str = "all",
) -> TaxonomyScan:
    """Finds the leaves and changed leaves of a checkout and validates `all` leaves or only the
    `changed` ones (what `ilab taxonomy diff` checks)."""
    include, exclude = include or [], exclude or []
    candidates = leaves.select(
        [p for p in leaves.walk(root) if leaves.is_leaf(p) or leaves.is_misnamed_leaf(p)], include, exclude
    )
    changed = set(leaves.select(changed_paths(root, base), include, exclude)) & set(candidates)
    report = validate_tree(root, sorted(changed) if validate == "changed" else candidates)
    return TaxonomyScan(
        leaves=[p for p in candidates if leaves.is_leaf(p)],
        changed=sorted(p for p in changed if leaves.is_leaf(p)),
        report=report,
    )
