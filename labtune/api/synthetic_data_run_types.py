"""The SyntheticDataRun kind: one generation of a LAB dataset from a taxonomy revision."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from labtune.api.base import (
    ApiModel,
    ArtifactURI,
    BatchSpec,
    CommitSHA,
    ConfigMapKeyReference,
    ObjectName,
    RunStatusBase,
    SchedulingSpec,
    SecretKeyReference,
    Sha256,
    cel,
    exactly_one,
    model_rules,
    rules,
)
from labtune.api.resource import PrinterColumn, Resource

# A 512-token reply (the most the built-in pipelines ask for) is a few KiB of JSON, even with every
# character \u-escaped; 256 KiB leaves room for custom pipelines with replies of ~16k tokens and
# still stops a runaway teacher long before memory or the volume notice.
DEFAULT_MAX_REPLY_BYTES = 256 * 1024


class TaxonomyReference(ApiModel):
    """The Taxonomy to generate from."""

    name: ObjectName
    """Name of a Taxonomy in the same namespace."""
    revision: CommitSHA | None = None
    """Use this commit instead of the Taxonomy's current `status.revision`."""


class TeacherEndpoint(ApiModel):
    """An OpenAI-compatible server (vLLM, KServe, llama.cpp, a hosted API)."""

    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2048,
            json_schema_extra=rules(
                cel(
                    "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''"
                    " && !self.contains('?') && !self.contains('#')",
                    "teacher endpoint url must be an http:// or https:// URL with a host and no query or "
                    "fragment, e.g. http://teacher:8000/v1",
                )
            ),
        ),
    ]
    """Base URL of the API, usually ending in `/v1`."""
    model: Annotated[str, Field(min_length=1, max_length=512)]
    """Model name to request."""
    api_key_secret_ref: SecretKeyReference | None = None
    """Secret key holding the API key (passed to the pod through secretKeyRef only)."""
    ca_secret_ref: SecretKeyReference | None = None
    """Secret key holding a PEM CA bundle for a private TLS endpoint."""
    max_reply_bytes: Annotated[int, Field(ge=4096, le=16 * 1024 * 1024)] = DEFAULT_MAX_REPLY_BYTES
    """Largest reply body accepted from the teacher; a larger one is dropped and counted, so a
    server that ignores `max_tokens` cannot exhaust the generator's memory or volume."""


class TeacherModel(ApiModel):
    """A teacher served inside the generator pod by a vLLM sidecar on GPUs."""

    uri: ArtifactURI
    """The model's weights (Hugging Face layout) on the artifact store."""
    gpus: Annotated[int, Field(ge=1, le=16)] = 1
    """GPUs given to the vLLM sidecar (tensor parallel size)."""
    max_model_len: Annotated[int, Field(ge=512, le=1_048_576)] | None = None
    """Context length the server allows; the model's own when unset."""


class Teacher(ApiModel):
    """The model that writes and judges the synthetic data: exactly one of endpoint or model."""

    model_config = model_rules(
        cel(
            exactly_one("endpoint", "model"),
            "set exactly one of teacher.endpoint (an OpenAI-compatible server) "
            "or teacher.model (served in the pod by vLLM)",
        )
    )

    endpoint: TeacherEndpoint | None = None
    """Use an existing OpenAI-compatible server."""
    model: TeacherModel | None = None
    """Serve a model in the generator pod."""


class PipelineSpec(ApiModel):
    """Which generation pipeline runs: a built-in one or a custom one from a ConfigMap."""

    model_config = model_rules(
        cel(
            "!(has(self.builtin) && has(self.configMapRef))",
            "set either pipeline.builtin or pipeline.configMapRef, not both",
        )
    )

    builtin: Literal["simple", "full"] | None = None
    """`simple`: one generation step per leaf type; `full`: generation with teacher-judge filters.
    `simple` when neither this nor configMapRef is set."""
    config_map_ref: ConfigMapKeyReference | None = None
    """A custom pipeline YAML in a ConfigMap."""


class ScaleSpec(ApiModel):
    """How much data to generate and how hard to drive the teacher."""

    samples_per_seed: Annotated[int, Field(ge=1, le=10_000)] = 30
    """New examples to generate per seed example (before filtering)."""
    chunk_tokens: Annotated[int, Field(ge=128, le=16_384)] = 1000
    """Size of knowledge document chunks, in teacher tokens."""
    max_concurrency: Annotated[int, Field(ge=1, le=1024)] = 32
    """Teacher requests in flight at once."""
    seed: Annotated[int, Field(ge=0)] = 42
    """Random seed for sampling and mixing: the same inputs and seed give the same datasets."""


class ReplayDataset(ApiModel):
    """A precomputed dataset mixed into the skills phase (replay against forgetting)."""

    model_config = model_rules(
        cel("!(has(self.samples) && has(self.ratio))", "set at most one of samples or ratio")
    )

    uri: ArtifactURI
    """JSONL dataset in the messages format."""
    samples: Annotated[int, Field(ge=1)] | None = None
    """Draw this many samples."""
    ratio: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    """Draw this many samples per generated skills sample."""


class RaftSpec(ApiModel):
    """RAFT-style knowledge samples of the skills phase (Retrieval Augmented Fine-Tuning, as
    InstructLab's phase 1.0 builds them): the question with several document chunks in its user
    turn, the one it was written from (the golden chunk) only some of the time, so the model learns
    to answer from what it knows and to use a document only when it holds the answer."""

    documents: Annotated[int, Field(ge=1, le=16)] = 4
    """Chunks in each sample's context: the golden one and distractors drawn from the other
    samples' chunks, or only distractors (fewer when there are not that many other chunks)."""
    golden_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.4
    """Chance that the golden chunk is among them."""


class MixingSpec(ApiModel):
    """How the phase datasets are assembled (LAB's data mixing): phase 1 trains on each knowledge
    sample whole (its source chunk, the question and the answer) and on the auxiliary samples;
    phase 2 holds the skills samples, the knowledge samples again (as RAFT samples, answer trained
    only, and whole as in phase 1), the auxiliary samples and the replay datasets."""

    knowledge_replay_ratio: Annotated[float, Field(ge=0.0, le=10.0)] | None = None
    """Knowledge samples in the skills dataset, per skills sample, drawn from all of them. Unset:
    all of them, as InstructLab mixes."""
    raft: RaftSpec = Field(default_factory=RaftSpec)
    """RAFT context of the skills dataset's knowledge samples (knowledge flows that keep their
    chunk apart: a pipeline sample with `context`)."""
    knowledge_floor: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.03
    """The smallest share of knowledge samples in the skills dataset: when large replay datasets
    outnumber them, knowledge samples are repeated (drawn again, seeded) up to it, as InstructLab
    upsamples knowledge below 3 %. 0 turns it off."""
    replay: Annotated[list[ReplayDataset], Field(max_length=16)] = Field(default_factory=list)
    """Precomputed datasets mixed into the skills dataset."""


class HoldOutSpec(ApiModel):
    """Seed examples held back from the teacher and written as an evaluation dataset
    (`evaluation.jsonl` beside the phase datasets, `status.outputs.evaluation`): questions the tuned
    model never saw, with the answers the taxonomy's authors wrote."""

    model_config = model_rules(
        cel(
            "!(has(self.heldOutSeedFraction) && has(self.heldOutSeeds) && self.heldOutSeeds > 0)",
            "set at most one of evaluation.heldOutSeeds or evaluation.heldOutSeedFraction",
        )
    )

    held_out_seeds: Annotated[int, Field(ge=0, le=100)] = 0
    """Seed examples held back from every leaf, chosen at random (seeded by `scale.seed` and the
    leaf's path) and never shown to the teacher; each question/answer pair of a knowledge seed
    becomes one evaluation question (asked without its context). Every leaf must keep at least one
    seed example to generate from. 0, the default, holds none back."""
    held_out_seed_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    """Instead of a count: this fraction of every leaf's seed examples, rounded down but at least
    one. A count suits taxonomies whose leaves have about as many seeds as InstructLab asks for (5);
    a fraction holds back proportionally more from leaves that have many."""


class ChoicePipelineSpec(ApiModel):
    """The pipeline that writes multiple-choice questions: the built-in one or a custom one from a
    ConfigMap (the pipeline format, each flow ending in `choice:` instead of `sample:`)."""

    model_config = model_rules(
        cel(
            "!(has(self.builtin) && has(self.configMapRef))",
            "set either evaluation.multipleChoice.pipeline.builtin or .configMapRef, not both",
        )
    )

    builtin: Literal["multiple-choice"] | None = None
    """`multiple-choice`: the teacher writes questions from each chunk, then judges each one
    against the chunk (is the marked answer right, and the only right one). The default."""
    config_map_ref: ConfigMapKeyReference | None = None
    """A custom multiple-choice pipeline YAML in a ConfigMap."""


class MultipleChoiceSpec(ApiModel):
    """Multiple-choice questions about every knowledge leaf, written by the teacher from the leaf's
    document chunks and filtered by a teacher judge (InstructLab's MMLU-branch), as
    `evaluation-choices.jsonl`: a TuningJob scores them with lm-evaluation-harness."""

    questions_per_chunk: Annotated[int, Field(ge=1, le=20)] = 3
    """Questions asked of the teacher per document chunk (before the judge)."""
    pipeline: ChoicePipelineSpec = Field(default_factory=ChoicePipelineSpec)
    """The pipeline that writes them."""


class EvaluationDataSpec(HoldOutSpec):
    """Evaluation datasets written beside the phase datasets: held-out seed examples, and
    multiple-choice questions."""

    multiple_choice: MultipleChoiceSpec | None = None
    """Have the teacher write multiple-choice questions about each knowledge leaf; unset: none."""


class CacheSpec(ApiModel):
    """Reuse of earlier runs' leaves (the leaf cache on the output's artifact volume)."""

    policy: Literal["Reuse", "Regenerate", "Disabled"] = "Reuse"
    """`Reuse`: a leaf whose inputs (its content and documents, pipeline, teacher, scale, seed,
    held-out seeds) match a cached one's takes its samples, the teacher writes only the others;
    `Regenerate`: the teacher writes every leaf and the cache keeps the new samples (when the
    teacher behind an unchanged name changed); `Disabled`: the cache is neither read nor written."""


class SyntheticDataRunTemplateSpec(BatchSpec):
    """A SyntheticDataRun's spec without its Taxonomy (a LabPipeline's template; the pipeline
    names the Taxonomy and the revision)."""

    teacher: Teacher
    """The teacher model."""
    pipeline: PipelineSpec = Field(default_factory=PipelineSpec)
    """The generation pipeline."""
    leaves: Literal["changed", "all"] = "changed"
    """Generate for the Taxonomy's changed leaves or all leaves."""
    scale: ScaleSpec = Field(default_factory=ScaleSpec)
    """Amount of data and teacher concurrency."""
    mixing: MixingSpec = Field(default_factory=MixingSpec)
    """Assembly of the phase datasets."""
    evaluation: EvaluationDataSpec = Field(default_factory=EvaluationDataSpec)
    """Evaluation datasets: seed examples held back from generation, multiple-choice questions."""
    output: ArtifactURI | None = None
    """Where the datasets are written; under the operator's default artifact claim when unset."""
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    """Placement of the generator pod."""
    leaf_failure_policy: Literal["FailRun", "SkipLeaf"] = "FailRun"
    """When a leaf yields no sample (every one filtered out or rejected): `FailRun` fails the run
    naming the leaf (the other leaves stay checkpointed in the output, so a run with the same
    output resumes them); `SkipLeaf` writes the datasets from the other leaves and lists the
    failed ones in `status.failedLeaves`. A run where every leaf fails always fails."""
    cache: CacheSpec = Field(default_factory=CacheSpec)
    """Reuse of the leaves earlier runs generated from the same inputs."""
    parallelism: Annotated[int, Field(ge=1, le=64)] = 1
    """Generator pods at once. Above 1, an Indexed Job splits the leaves across its pods,
    balanced by expected work (each pod with its own vLLM sidecar when the teacher is a model, or
    sharing the endpoint, each at `scale.maxConcurrency`), then one pod mixes the shards into the
    datasets: the same datasets as with 1 for a deterministic teacher. A failing pod is retried
    alone, up to `backoffLimit` times per index."""


class SyntheticDataRunSpec(SyntheticDataRunTemplateSpec):
    """Desired state of a SyntheticDataRun. Immutable once the run has started, except `suspend`."""

    taxonomy_ref: TaxonomyReference
    """The Taxonomy to generate from; the run waits until it is Ready."""


class LeafFailure(ApiModel):
    """A leaf that produced no sample, and why."""

    path: Annotated[str, Field(max_length=4096)]
    """The leaf's qna.yaml, relative to the taxonomy root."""
    reason: Annotated[str, Field(max_length=1024)]
    """What happened to its samples, stage by stage."""


NonNegative = Annotated[int, Field(ge=0)]


class DatasetOutput(ApiModel):
    """A dataset the run produced."""

    uri: ArtifactURI
    """Where it is."""
    samples: Annotated[int, Field(ge=0)]
    """Number of records."""
    sha256: Sha256
    """Digest of the file."""
    sources: Annotated[dict[str, NonNegative], Field(max_length=32)] | None = None
    """A training dataset's records by where they came from (`metadata.source`): `generated` (a
    knowledge sample whole, or a skills sample), `auxiliary`, `raft`, `knowledge_replay`, or a
    replay dataset's URI."""
    upsampled: NonNegative | None = None
    """The skills dataset's knowledge records repeated to reach `mixing.knowledgeFloor` (counted in
    `sources` too)."""


class GenerationOutputs(ApiModel):
    """The datasets of a finished run."""

    knowledge: DatasetOutput | None = None
    """Phase-1 (knowledge) dataset."""
    skills: DatasetOutput | None = None
    """Phase-2 (skills with replay) dataset."""
    evaluation: DatasetOutput | None = None
    """The seed examples `spec.evaluation` held back from the teacher: questions with reference
    answers (EvalExample records)."""
    evaluation_choices: DatasetOutput | None = None
    """The multiple-choice questions `spec.evaluation.multipleChoice` had the teacher write
    (ChoiceExample records)."""


class GenerationProgress(ApiModel):
    """Progress of a running generation."""

    percent: Annotated[int, Field(ge=0, le=100)] = 0
    """Leaves done, in percent."""
    leaves_done: Annotated[int, Field(ge=0)] = 0
    """Leaves finished."""
    leaves_total: Annotated[int, Field(ge=0)] = 0
    """Leaves to generate for."""
    samples_generated: Annotated[int, Field(ge=0)] = 0
    """Samples the teacher produced."""
    samples_kept: Annotated[int, Field(ge=0)] = 0
    """Samples that passed every filter."""


class GenerationCost(ApiModel):
    """What a run asked of the teacher."""

    leaves_generated: NonNegative = 0
    """Leaves the teacher wrote samples for in this run."""
    leaves_reused: NonNegative = 0
    """Leaves whose samples came from the leaf cache (spec.cache)."""
    prompt_tokens: NonNegative = 0
    """Teacher prompt tokens spent."""
    completion_tokens: NonNegative = 0
    """Teacher completion tokens spent."""


class SyntheticDataRunStatus(RunStatusBase):
    """Observed state of a SyntheticDataRun."""

    taxonomy_revision: CommitSHA | None = None
    """The taxonomy commit this run uses (pinned when it starts)."""
    progress: GenerationProgress | None = None
    """Progress while running."""
    outputs: GenerationOutputs | None = None
    """The datasets, once succeeded."""
    failed_leaves: Annotated[list[LeafFailure], Field(max_length=20)] = Field(default_factory=list)
    """Leaves skipped under `leafFailurePolicy: SkipLeaf` (the first 20; all are in the report)."""
    failed_leaf_count: Annotated[int, Field(ge=0)] | None = None
    """How many leaves were skipped."""
    cost: GenerationCost | None = None
    """Leaves reused and generated, teacher tokens spent (once succeeded)."""


class SyntheticDataRun(Resource):
    """One LAB synthetic data generation: a teacher turns a taxonomy revision's seed examples and
    knowledge documents into phase-1 (knowledge) and phase-2 (skills) training datasets."""

    plural: ClassVar[str] = "syntheticdataruns"
    short_names: ClassVar[tuple[str, ...]] = ("sdr",)
    mutable_after_start: ClassVar[frozenset[str] | None] = frozenset({"suspend"})
    immutable: ClassVar[frozenset[str]] = frozenset({"managedBy"})
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn("State", "string", ".status.state"),
        PrinterColumn("Taxonomy", "string", ".spec.taxonomyRef.name"),
        PrinterColumn("Progress%", "integer", ".status.progress.percent"),
        PrinterColumn("Kept", "integer", ".status.progress.samplesKept"),
        PrinterColumn("Reused", "integer", ".status.cost.leavesReused", priority=1),
        PrinterColumn("Revision", "string", ".status.taxonomyRevision", priority=1),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', priority=1),
    )

    kind: Literal["SyntheticDataRun"] = "SyntheticDataRun"
    spec: SyntheticDataRunSpec
    status: SyntheticDataRunStatus | None = None
