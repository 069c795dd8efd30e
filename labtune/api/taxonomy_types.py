"""The Taxonomy kind: where a LAB taxonomy lives and the state of its last sync."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from labtune.api.base import (
    ApiModel,
    ArtifactURI,
    CommitSHA,
    Duration,
    LocalObjectReference,
    SchedulingSpec,
    Sha256,
    StatusBase,
    cel,
    exactly_one,
    model_rules,
    rules,
)
from labtune.api.resource import PrinterColumn, Resource

GitRefName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        json_schema_extra=rules(
            cel(
                r"!self.matches(r'(^[-/.])|(\.\.)|([\s~^:?*\[\\])|(/$)|(\.lock$)')",
                "must be a valid git ref name (no spaces, '..', '~', '^', ':', '?', '*', '[' or '\\\\', "
                "and not starting with '-', '/' or '.')",
            )
        ),
    ),
]
PathGlob = Annotated[str, Field(min_length=1, max_length=512)]


class GitRef(ApiModel):
    """Which revision to check out: exactly one of branch, tag or commit."""

    model_config = model_rules(
        cel(exactly_one("branch", "tag", "commit"), "set exactly one of branch, tag or commit")
    )

    branch: GitRefName | None = None
    """Follow the tip of this branch (re-resolved at every sync)."""
    tag: GitRefName | None = None
    """Check out this tag."""
    commit: CommitSHA | None = None
    """Check out exactly this commit."""


class GitSource(ApiModel):
    """A git repository holding the taxonomy tree."""

    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2048,
            json_schema_extra=rules(
                cel(
                    "self.startsWith('https://') || self.startsWith('ssh://') "
                    "|| self.matches(r'^[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+:[^/].*$')",
                    "git url must use https:// or ssh:// (or the scp form user@host:path); "
                    "http://, git:// and file:// are not allowed",
                )
            ),
        ),
    ]
    """Repository URL: `https://…`, `ssh://…` or `git@host:org/repo.git`."""
    ref: GitRef | None = None
    """Revision to sync; the repository's default branch when unset."""
    secret_ref: LocalObjectReference | None = None
    """Secret with credentials, mounted into the sync pod only (the operator never reads it):
    `kubernetes.io/basic-auth` (username, password/token) for https, or `kubernetes.io/ssh-auth`
    (ssh-privatekey, optional known_hosts) for ssh; a `ca.crt` key (PEM) is the CA of a private
    https server."""


class TaxonomySource(ApiModel):
    """Where the taxonomy comes from."""

    git: GitSource
    """A git repository."""


class TaxonomySpec(ApiModel):
    """Desired state of a Taxonomy."""

    source: TaxonomySource
    """Where the taxonomy lives."""
    interval: Duration | None = None
    """Re-sync this often (e.g. `10m`); synced only when the spec changes when unset."""
    base: GitRefName = "empty"
    """Which leaves count as changed, as `ilab taxonomy diff --taxonomy-base`: `empty` means every
    leaf; a ref (e.g. `origin/main`) means leaves added or modified since the merge base with it."""
    include: Annotated[list[PathGlob], Field(max_length=64)] = Field(default_factory=list)
    """Only leaves whose path matches one of these globs (e.g. `knowledge/science/**`); all when empty."""
    exclude: Annotated[list[PathGlob], Field(max_length=64)] = Field(default_factory=list)
    """Leaves whose path matches one of these globs are left out."""
    output: ArtifactURI | None = None
    """Where the sync writes the leaf manifest; the operator's default artifact claim when unset."""
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    """Placement of the sync pod."""


class LeafCounts(ApiModel):
    """Number of taxonomy leaves by type."""

    knowledge: Annotated[int, Field(ge=0)] = 0
    """Knowledge leaves."""
    freeform_skills: Annotated[int, Field(ge=0)] = 0
    """Compositional skills without context."""
    grounded_skills: Annotated[int, Field(ge=0)] = 0
    """Compositional skills with context."""
    total: Annotated[int, Field(ge=0)] = 0
    """All leaves."""


class ValidationIssue(ApiModel):
    """One problem found in a qna.yaml file."""

    path: Annotated[str, Field(max_length=1024)]
    """File path relative to the repository root."""
    line: Annotated[int, Field(ge=0)] | None = None
    """1-based line number, when known."""
    message: Annotated[str, Field(max_length=1024)]
    """What is wrong."""


class TaxonomyStatus(StatusBase):
    """Observed state of a Taxonomy."""

    revision: CommitSHA | None = None
    """The commit the last successful sync resolved."""
    leaf_counts: LeafCounts | None = None
    """Leaves by type at that revision."""
    changed_leaves: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=256)] = Field(
        default_factory=list
    )
    """Paths of the leaves that count as changed against `spec.base` (the first 256)."""
    changed_leaf_count: Annotated[int, Field(ge=0)] | None = None
    """Number of changed leaves."""
    errors: Annotated[list[ValidationIssue], Field(max_length=50)] = Field(default_factory=list)
    """The first validation errors, with file and line."""
    error_count: Annotated[int, Field(ge=0)] | None = None
    """Number of validation errors."""
    warnings: Annotated[list[ValidationIssue], Field(max_length=50)] = Field(default_factory=list)
    """The first warnings (a misnamed qna.yml, a lint finding), with file and line."""
    warning_count: Annotated[int, Field(ge=0)] | None = None
    """Number of warnings."""
    manifest: ArtifactURI | None = None
    """The full leaf manifest written by the last sync."""
    leaves_digest: Sha256 | None = None
    """sha256 over every leaf's path and qna.yaml digest at `revision`: a new revision with the same
    digest changes no leaf (a LabPipeline stamps no run for it)."""
    last_sync_time: datetime | None = None
    """When the last sync finished."""


class Taxonomy(Resource):
    """A LAB taxonomy in a git repository: the operator syncs it, pins the commit, validates every
    qna.yaml and reports leaf counts, changed leaves and errors."""

    plural: ClassVar[str] = "taxonomies"
    short_names: ClassVar[tuple[str, ...]] = ("tax",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Revision", "string", ".status.revision"),
        PrinterColumn("Leaves", "integer", ".status.leafCounts.total"),
        PrinterColumn("Changed", "integer", ".status.changedLeafCount"),
        PrinterColumn("Errors", "integer", ".status.errorCount"),
        PrinterColumn("Repository", "string", ".spec.source.git.url", priority=1),
        PrinterColumn("Last-Sync", "date", ".status.lastSyncTime", priority=1),
    )

    kind: Literal["Taxonomy"] = "Taxonomy"
    spec: TaxonomySpec
    status: TaxonomyStatus | None = None
