"""The Taxonomy sync pod (`labtune taxonomy sync --config FILE`): clone the repository at the
ref, pin the commit, validate, find the leaves and changed leaves, write the leaf manifest."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from labtune.api.taxonomy import ValidationIssue
from labtune.contract import resolve_artifact
from labtune.contract.taxonomy import LeafManifest, ManifestLeaf, TaxonomySyncConfig, TaxonomySyncSummary
from labtune.generator import gitrepo, summaries
from labtune.generator.taxonomy import TaxonomyScan, scan
from labtune.generator.validation import FileReport, Issue

_MESSAGE_CHARS = 300  # keep single messages short in status; the manifest has them whole


def _issues(path: str, issues: list[Issue], limit: int | None = None) -> list[ValidationIssue]:
    return [
        ValidationIssue(path=path, line=i.line, message=i.message[:limit] if limit else i.message)
        for i in issues
    ]


def _manifest_leaf(root: Path, file: FileReport, changed: set[str]) -> ManifestLeaf:
    return ManifestLeaf(
        path=file.path,
        leaf_type=file.leaf_type,
        changed=file.path in changed,
        sha256=hashlib.sha256((root / file.path).read_bytes()).hexdigest(),
        errors=_issues(file.path, file.errors),
        warnings=_issues(file.path, file.warnings),
    )


def manifest(root: Path, commit: str, base: str, result: TaxonomyScan) -> LeafManifest:
    changed = set(result.changed)
    return LeafManifest(
        commit=commit,
        base=base,
        leaf_counts=result.leaf_counts(),
        leaves=[_manifest_leaf(root, f, changed) for f in result.report.files],
    )


def summarize(commit: str, result: TaxonomyScan, manifest_uri: str) -> TaxonomySyncSummary:
    errors = [i for f in result.report.files for i in _issues(f.path, f.errors, _MESSAGE_CHARS)]
    warnings = [i for f in result.report.files for i in _issues(f.path, f.warnings, _MESSAGE_CHARS)]
    summary = TaxonomySyncSummary(
        commit=commit,
        leaf_counts=result.leaf_counts(),
        changed_leaves=result.changed,
        changed_leaf_count=len(result.changed),
        errors=errors[:50],
        error_count=len(errors),
        warnings=warnings[:50],
        warning_count=len(warnings),
        manifest=manifest_uri,
    )
    return summaries.fit(summary, ("changed_leaves", "warnings", "errors"))


def sync(config: TaxonomySyncConfig) -> TaxonomySyncSummary:
    """Runs the sync and writes the manifest; raises gitrepo.GitError when the clone fails."""
    with tempfile.TemporaryDirectory(prefix="labtune-taxonomy-") as workdir:
        root = Path(workdir)
        commit = gitrepo.clone(config.git, root, base=config.base)
        result = scan(root, base=config.base, include=config.include, exclude=config.exclude)
        leaf_manifest = manifest(root, commit, config.base, result)
    path = resolve_artifact(config.manifest, config.artifact_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(leaf_manifest.model_dump_json(by_alias=True, indent=1))
    return summarize(commit, result, config.manifest)
