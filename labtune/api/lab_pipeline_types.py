"""The LabPipeline kind: continuous LAB. On every revision of a Taxonomy that changes its leaves, it
stamps a SyntheticDataRun and a TuningJob from its templates (as a CronJob stamps Jobs), keeps the
last few, and records which revision produced the latest model."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from labtune.api.base import (
    ApiModel,
    CommitSHA,
    LocalObjectReference,
    ObjectName,
    Sha256,
    StatusBase,
)
from labtune.api.resource import PrinterColumn, Resource
from labtune.api.synthetic_data_run_types import SyntheticDataRunTemplateSpec
from labtune.api.tuning_job_types import TuningJobTemplateSpec, TuningOutput

LabelValue = Annotated[str, Field(max_length=63)]


class TemplateMetadata(ApiModel):
    """Labels and annotations every stamped run gets (a Kueue queue name, a team label)."""

    labels: Annotated[dict[str, LabelValue], Field(max_length=64)] = Field(default_factory=dict)
    """Labels of the stamped resource (its own labtune.io labels are added)."""
    annotations: Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = Field(
        default_factory=dict
    )
    """Annotations of the stamped resource."""


class SyntheticDataRunTemplate(ApiModel):
    """The SyntheticDataRun stamped for a revision: the spec without its Taxonomy, which is the
    pipeline's, pinned to the revision."""

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    """Labels and annotations of the stamped run."""
    spec: SyntheticDataRunTemplateSpec
    """Its spec; an `output` set here gets the run's name appended, so runs never share a folder."""


class TuningJobTemplate(ApiModel):
    """The TuningJob stamped for a revision: the spec without its data, which is the SyntheticDataRun
    of the same revision."""

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    """Labels and annotations of the stamped job."""
    spec: TuningJobTemplateSpec
    """Its spec; an `output.uri` set here gets the job's name appended."""


ConcurrencyPolicy = Literal["Queue", "Replace", "Forbid"]


class LabPipelineSpec(ApiModel):
    """Desired state of a LabPipeline. A change applies to the runs it stamps from then on."""

    taxonomy_ref: LocalObjectReference
    """The Taxonomy whose revisions are followed."""
    suspend: bool = False
    """Stamp no new runs while true (the running ones go on); the revisions that arrive meanwhile are
    taken up, the newest only, when it is set back to false."""
    concurrency_policy: ConcurrencyPolicy = "Queue"
    """What a new revision does while a run is active. `Queue`: it waits, and when the run finishes
    the newest waiting revision runs (revisions in between are not run: the newest holds all their
    changes); `Replace`: the active run is deleted and the new revision starts; `Forbid`: it is
    skipped (counted in `status.skippedRevisions`), and runs only if no newer revision comes."""
    history_limit: Annotated[int, Field(ge=1, le=100)] = 3
    """Finished runs kept (each a SyntheticDataRun and a TuningJob); older ones are deleted, their
    outputs on the artifact volume are not. The one that produced `status.latestSucceeded` is always
    kept."""
    synthetic_data_run_template: SyntheticDataRunTemplate
    """The SyntheticDataRun stamped for each revision."""
    tuning_job_template: TuningJobTemplate | None = None
    """The TuningJob stamped for each revision, trained on that revision's data; none: generate only."""


class StampedRun(ApiModel):
    """One revision's run: a SyntheticDataRun and (with a TuningJob template) a TuningJob, both named
    `name`."""

    name: ObjectName
    """Name of the SyntheticDataRun and of the TuningJob."""
    revision: CommitSHA
    """The Taxonomy commit it runs on."""
    leaves_digest: Sha256
    """The Taxonomy's leaves digest at that commit."""
    state: Literal["Running", "Succeeded", "Failed"]
    """Running until the last of its resources finished."""


class PipelineResult(ApiModel):
    """A run that produced a model (or, with no TuningJob template, datasets)."""

    name: ObjectName
    """Name of its SyntheticDataRun and TuningJob."""
    revision: CommitSHA
    """The Taxonomy commit it ran on."""
    output: TuningOutput | None = None
    """The TuningJob's output (adapter / merged model with digests)."""
    gate_passed: bool | None = None
    """Whether the TuningJob's evaluation gate passed; none when its spec sets no gate."""


class LabPipelineStatus(StatusBase):
    """Observed state of a LabPipeline."""

    state: Literal["Waiting", "Idle", "Running", "Suspended", "Failed"] | None = None
    """Waiting for its Taxonomy; Idle (the newest revision has run); Running; Suspended; Failed (the
    newest revision's run failed; the next revision tries again)."""
    taxonomy_revision: CommitSHA | None = None
    """The newest Taxonomy revision seen."""
    leaves_digest: Sha256 | None = None
    """Its leaves digest: a revision with the same digest as the last run's changes no leaf."""
    active: StampedRun | None = None
    """The run in progress."""
    queued_revision: CommitSHA | None = None
    """The revision waiting for the active run to finish (concurrencyPolicy Queue)."""
    last_run: StampedRun | None = None
    """The newest stamped run."""
    latest_succeeded: PipelineResult | None = None
    """The newest run that succeeded: the revision of the latest model."""
    latest_gate_passed: PipelineResult | None = None
    """The newest run whose TuningJob passed its evaluation gate (with a gate in the template)."""
    runs: Annotated[int, Field(ge=0)] = 0
    """Runs stamped so far."""
    skipped_revisions: Annotated[int, Field(ge=0)] = 0
    """Revisions not run because a run was active (concurrencyPolicy Forbid)."""
    skipped_digest: Sha256 | None = None
    """The leaves digest last skipped: not run unless the leaves change again."""


class LabPipeline(Resource):
    """Continuous LAB: a SyntheticDataRun and a TuningJob, stamped from templates, for every revision
    of a Taxonomy that changes its leaves."""

    plural: ClassVar[str] = "labpipelines"
    short_names: ClassVar[tuple[str, ...]] = ("lp",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn("State", "string", ".status.state"),
        PrinterColumn("Taxonomy", "string", ".spec.taxonomyRef.name"),
        PrinterColumn("Revision", "string", ".status.taxonomyRevision"),
        PrinterColumn("Active", "string", ".status.active.name"),
        PrinterColumn("Latest-Model", "string", ".status.latestSucceeded.revision"),
        PrinterColumn("Runs", "integer", ".status.runs", priority=1),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', priority=1),
    )

    kind: Literal["LabPipeline"] = "LabPipeline"
    spec: LabPipelineSpec
    status: LabPipelineStatus | None = None
