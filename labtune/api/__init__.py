"""The labtune.io/v1alpha1 API: pydantic models of the four kinds, the single source of the CRDs."""

from __future__ import annotations

from labtune.api.base import API_VERSION, GROUP, VERSION, Condition
from labtune.api.lab_pipeline_types import LabPipeline, LabPipelineSpec, LabPipelineStatus
from labtune.api.resource import Resource
from labtune.api.synthetic_data_run_types import (
    SyntheticDataRun,
    SyntheticDataRunSpec,
    SyntheticDataRunStatus,
)
from labtune.api.taxonomy_types import Taxonomy, TaxonomySpec, TaxonomyStatus
from labtune.api.tuning_job_types import TuningJob, TuningJobSpec, TuningJobStatus

KINDS: tuple[type[Resource], ...] = (Taxonomy, SyntheticDataRun, TuningJob, LabPipeline)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "LabPipeline",
    "LabPipelineSpec",
    "LabPipelineStatus",
    "Resource",
    "SyntheticDataRun",
    "SyntheticDataRunSpec",
    "SyntheticDataRunStatus",
    "Taxonomy",
    "TaxonomySpec",
    "TaxonomyStatus",
    "TuningJob",
    "TuningJobSpec",
    "TuningJobStatus",
]
