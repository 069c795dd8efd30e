"""What a LabPipeline stamps for one Taxonomy revision: a SyntheticDataRun pinned to the revision and
a TuningJob trained on it, named `<pipeline>-<commit>`, owned by the pipeline. Pure functions of
the pipeline and the revision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labtune.api import GROUP, LabPipeline, SyntheticDataRun, TuningJob
from labtune.api.lab_pipeline_types import TemplateMetadata
from labtune.operator.children.child_names import (
    MAX_NAME,
    child_name,
    kind_label,
    owner_reference,
    selector,
)

REVISION = f"{GROUP}/revision"
LEAVES_DIGEST = f"{GROUP}/leaves-digest"
REVISION_CHARS = 12
"""Of the commit in a stamped run's name: unique within one repository in practice, and short."""


def run_name(pipeline: str, revision: str) -> str:
    """The name of a revision's SyntheticDataRun and TuningJob: at most 63 characters, since their
    own children carry it as a label value."""
    return child_name(pipeline, revision[:REVISION_CHARS], MAX_NAME)


def _metadata(
    body: Mapping[str, Any], template: TemplateMetadata, name: str, revision: str, digest: str
) -> dict[str, Any]:
    pipeline = body["metadata"]["name"]
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": {**template.labels, **selector("LabPipeline", pipeline)},
        "annotations": {
            **template.annotations,
            kind_label("LabPipeline"): pipeline,
            REVISION: revision,
            LEAVES_DIGEST: digest,
        },
        "ownerReferences": [owner_reference(body)],
    }


def _own_folder(uri: str | None, name: str) -> str | None:
    """An output the template names, with the run's name appended: runs never share a folder."""
    return f"{uri.rstrip('/')}/{name}" if uri else None


def build_runs(body: Mapping[str, Any], revision: str, digest: str) -> tuple[dict[str, Any], ...]:
    """The SyntheticDataRun and (when the pipeline has a TuningJob template) the TuningJob of one
    revision."""
    pipeline = LabPipeline.model_validate(body)
    spec, name = pipeline.spec, run_name(body["metadata"]["name"], revision)
    data_template = spec.synthetic_data_run_template
    data_spec = data_template.spec.to_wire()
    data_spec["taxonomyRef"] = {"name": spec.taxonomy_ref.name, "revision": revision}
    if output := _own_folder(data_template.spec.output, name):
        data_spec["output"] = output
    runs = [
        {
            "apiVersion": SyntheticDataRun.model_fields["api_version"].default,
            "kind": "SyntheticDataRun",
            "metadata": _metadata(body, data_template.metadata, name, revision, digest),
            "spec": data_spec,
        }
    ]
    if spec.tuning_job_template is not None:
        tuning = spec.tuning_job_template
        tuning_spec = tuning.spec.to_wire()
        tuning_spec["data"] = {"syntheticDataRunRef": {"name": name}}
        if uri := _own_folder(tuning.spec.output.uri, name):
            tuning_spec["output"]["uri"] = uri
        runs.append(
            {
                "apiVersion": TuningJob.model_fields["api_version"].default,
                "kind": "TuningJob",
                "metadata": _metadata(body, tuning.metadata, name, revision, digest),
                "spec": tuning_spec,
            }
        )
    return tuple(runs)
