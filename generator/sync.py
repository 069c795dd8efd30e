"""The Taxonomy sync pod (`labtune taxonomy sync --config FILE`): clone the repository at the
ref, pin the commit, validate, find the leaves and changed leaves, write the leaf manifest."""

from __future__ import annotations

import hashlib
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labtune.api.taxonomy_types import ValidationIssue
from labtune.contract.common import fit, output_path
from labtune.contract.taxonomy_sync import (
    GitCheckout,
    LeafManifest,
    ManifestLeaf,
    TaxonomySyncConfig,
    TaxonomySyncSummary,
)
from labtune.generator import documents, gitrepo
from labtune.generator.taxonomy_scan import TaxonomyScan, scan
from labtune.generator.validation import FileReport, Issue, ValidationReport, line_of

_MESSAGE_CHARS = 300  # keep single messages short in status; the manifest has them whole
_DOCUMENT_PROBES = 8  # document repositories checked at once (each mostly waits on the network)


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


def _unfetchable(source: documents.DocumentSource, template: GitCheckout) -> str | None:
    """Why the documents cannot be fetched, or None; raises GitError when retrying may help."""
    try:
        documents.check(source, template)
    except documents.DocumentError as error:
        return str(error)
    return None


def _check_documents(root: Path, report: ValidationReport, template: GitCheckout) -> None:
    """An error on each valid knowledge leaf whose documents cannot be fetched (no such repository
    or commit, credentials refused), found now rather than by a generation run; one probe per
    repository and commit, with the taxonomy's credentials and bounds."""
    leaves = {
        file.path: (file, documents.DocumentSource.model_validate(file.contents["document"]))
        for file in report.files
        if file.leaf_type == "knowledge" and file.contents
    }
    sources = {(s.repo, s.commit): s for _, s in leaves.values()}
    with ThreadPoolExecutor(_DOCUMENT_PROBES) as pool:
        failures = dict(
            zip(sources, pool.map(lambda s: _unfetchable(s, template), sources.values()), strict=True)
        )
    for path, (file, source) in leaves.items():
        if reason := failures[(source.repo, source.commit)]:
            line = line_of((root / path).read_text(encoding="utf-8"), ".document.repo") or 1
            file.errors.append(Issue(line=line, message=reason))
            file.contents = None  # contents are kept for valid leaves only


def manifest(root: Path, commit: str, base: str, result: TaxonomyScan) -> LeafManifest:
    changed = set(result.changed)
    return LeafManifest(
        commit=commit,
        base=base,
        leaf_counts=result.leaf_counts(),
        leaves=[_manifest_leaf(root, f, changed) for f in result.report.files],
    )


def leaves_digest(leaf_manifest: LeafManifest) -> str:
    """The sha256 of every leaf's path and qna.yaml digest: two revisions with the same digest have
    the same leaves (a qna.yaml pins its documents by commit), whatever else changed."""
    lines = sorted(f"{leaf.path}\0{leaf.sha256}" for leaf in leaf_manifest.leaves)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def summarize(commit: str, result: TaxonomyScan, manifest_uri: str, digest: str) -> TaxonomySyncSummary:
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
        leaves_digest=digest,
    )
    return fit(summary, ("changed_leaves", "warnings", "errors"))


def sync(config: TaxonomySyncConfig) -> TaxonomySyncSummary:
    """Runs the sync and writes the manifest; raises gitrepo.GitConfigError when the repository or
    ref is wrong, gitrepo.GitError when the clone fails for a reason retrying may help."""
    path = output_path(config.manifest, config.artifact_root, "manifest", folder=False)
    with tempfile.TemporaryDirectory(prefix="labtune-taxonomy-") as workdir:
        root = Path(workdir)
        commit = gitrepo.clone(config.git, root, base=config.base)
        result = scan(root, base=config.base, include=config.include, exclude=config.exclude)
        _check_documents(root, result.report, config.git)
        leaf_manifest = manifest(root, commit, config.base, result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(leaf_manifest.model_dump_json(by_alias=True, indent=1))
    return summarize(commit, result, config.manifest, leaves_digest(leaf_manifest))
