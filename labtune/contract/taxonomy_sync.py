"""Config and summary of the Taxonomy sync pod (`labtune taxonomy sync --config FILE`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from labtune.api.taxonomy_types import LeafCounts, ValidationIssue
from labtune.contract.common import ContractModel, LeafType, PodConfig


class GitCheckout(ContractModel):
    """A repository to clone, with credentials from a mounted Secret folder (never from env)."""

    url: str
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    credentials_dir: str | None = None
    """Mounted Secret: `username`+`password` (basic-auth) or `ssh-privatekey` (+`known_hosts`)."""
    ca_file: str | None = None
    """PEM CA bundle that signs a private https git server's certificate."""
    timeout_seconds: Annotated[int, Field(ge=1)] = 300
    """Bound on the whole clone."""
    max_bytes: Annotated[int, Field(ge=1)] = 512 * 1024 * 1024
    """Bound on the size of the clone on disk; the fetch is stopped past it."""


class TaxonomySyncConfig(PodConfig):
    """What the sync pod does: clone, pin, validate, find changed leaves, write the manifest."""

    kind: Literal["TaxonomySync"] = "TaxonomySync"
    git: GitCheckout
    base: str = "empty"
    """`empty` (all leaves changed) or a ref to diff against (ilab taxonomy diff semantics)."""
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    manifest: str
    """Artifact URI where the full leaf manifest (JSON) is written."""


class TaxonomySyncSummary(ContractModel):
    """The termination-log summary (under 4 KiB: lists are truncated, counts are exact)."""

    commit: str
    leaf_counts: LeafCounts
    changed_leaves: list[str] = Field(default_factory=list)
    changed_leaf_count: int = 0
    errors: list[ValidationIssue] = Field(default_factory=list)
    error_count: int = 0
    warnings: list[ValidationIssue] = Field(default_factory=list)
    warning_count: int = 0
    manifest: str
    leaves_digest: str | None = None
    """sha256 over every leaf's path and qna.yaml digest: the same for two revisions with the same
    leaves (a qna.yaml pins its documents by commit)."""


class ManifestLeaf(ContractModel):
    """One leaf of the synced taxonomy."""

    path: str
    leaf_type: LeafType | None
    """None when the file could not be read as a leaf (see its errors)."""
    changed: bool
    sha256: str
    """Digest of the qna.yaml file."""
    errors: list[ValidationIssue] = Field(default_factory=list)
    warnings: list[ValidationIssue] = Field(default_factory=list)


class LeafManifest(ContractModel):
    """The full result of a sync, written as JSON to the `manifest` artifact."""

    commit: str
    base: str
    leaf_counts: LeafCounts
    leaves: list[ManifestLeaf]
