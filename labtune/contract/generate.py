"""Config and summary of the SyntheticDataRun pod (`labtune generate --config FILE`)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from labtune.api.synthetic_data_run_types import (
    DEFAULT_MAX_REPLY_BYTES,
    GenerationCost,
    GenerationOutputs,
    HoldOutSpec,
    LeafFailure,
    MixingSpec,
    ScaleSpec,
)
from labtune.contract.common import ContractModel, PodConfig
from labtune.contract.taxonomy_sync import GitCheckout


class TeacherConfig(ContractModel):
    """The teacher backend. `openai`: any OpenAI-compatible server (also the vLLM sidecar on
    localhost); `transformers`: in-process on CPU, for tests and small runs."""

    backend: Literal["openai", "transformers"] = "openai"
    model: str
    """Model name to request (openai), or a local path / artifact URI of the weights (transformers):
    a Hugging Face folder or a .gguf file."""
    url: str | None = None
    """Base URL of the OpenAI-compatible API, e.g. `http://localhost:8000/v1` (openai)."""
    api: Literal["chat", "completions"] = "chat"
    """Which API the openai backend calls; `completions` sends the prompt as it is rendered."""
    api_key_env: str | None = "LABTUNE_TEACHER_API_KEY"
    """Environment variable holding the API key (the operator fills it from a secretKeyRef)."""
    api_key_file: str | None = None
    """File holding the API key; takes precedence over api_key_env."""
    ca_file: str | None = None
    """PEM CA bundle for a private TLS endpoint."""
    max_concurrency: Annotated[int, Field(ge=1)] = 32
    """Requests in flight at once (openai)."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 120.0
    """Limit on one attempt of a request, from connecting to the last byte of the reply (openai)."""
    max_retries: Annotated[int, Field(ge=0)] = 5
    """Retries of a request that timed out, could not connect, got a 408/409/429/5xx or a reply
    that is not the OpenAI API's; then the run stops (malformed replies: the sample is dropped)."""
    retry_backoff_seconds: Annotated[float, Field(ge=0)] = 0.5
    """Wait before the first retry; doubled for each further one, at most 8 s (openai)."""
    max_reply_bytes: Annotated[int, Field(ge=4096)] = DEFAULT_MAX_REPLY_BYTES
    """Largest reply body read from the teacher; a larger one is dropped and counted (openai)."""
    batch_size: Annotated[int, Field(ge=1)] = 8
    """Prompts per generate call (transformers)."""
    identity: str | None = None
    """What names the teacher's outputs in the leaf cache key when `model` does not (the vLLM
    sidecar serves every model under one name: the operator sets the model's URI)."""
    tokenizer: str | None = None
    """Tokenizer for chunking documents (a Hugging Face folder or a .gguf, path or artifact URI);
    the transformers teacher's own when unset, else about four characters per token."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        # The same rule as the CRD's for teacher.endpoint.url, for configs written by hand.
        if url is not None and not _is_http_url(url):
            raise ValueError(
                f"teacher.url {url!r} must be an http:// or https:// URL with a host and no query or "
                "fragment, e.g. http://teacher:8000/v1"
            )
        return url


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port != 0
        and "?" not in url
        and "#" not in url
    )


class PipelineRef(ContractModel):
    """A built-in pipeline by name, or a pipeline YAML file (e.g. a mounted ConfigMap key)."""

    builtin: Literal["simple", "full", "multiple-choice"] | None = None
    path: str | None = None
    """Pipeline YAML file; prompt files it names are relative to it."""

    @model_validator(mode="after")
    def _exactly_one(self) -> PipelineRef:
        if (self.builtin is None) == (self.path is None):
            raise ValueError("set exactly one of pipeline.builtin or pipeline.path")
        return self


class MultipleChoiceConfig(ContractModel):
    """Multiple-choice questions about every knowledge leaf (SyntheticDataRun
    `evaluation.multipleChoice`), written as `evaluation-choices.jsonl`."""

    questions_per_chunk: Annotated[int, Field(ge=1, le=20)] = 3
    pipeline: PipelineRef = Field(default_factory=lambda: PipelineRef(builtin="multiple-choice"))
    """A pipeline whose knowledge flow ends in `choice:`."""


DEFAULT_LEAF_CACHE_BYTES = 50 * 2**30
MAX_SHARDS = 64


class LeafCacheConfig(ContractModel):
    """The leaf cache shared by the runs on an artifact volume (SyntheticDataRun `cache`): a leaf
    whose inputs match a cached one's reuses its samples instead of asking the teacher."""

    uri: str
    """Artifact URI of the cache folder."""
    reuse: bool = True
    """False (policy Regenerate): ask the teacher for every leaf and replace the cached entries."""
    max_bytes: Annotated[int, Field(ge=0)] = DEFAULT_LEAF_CACHE_BYTES
    """Size bound: after the run, the least recently used entries it did not use are evicted
    until the cache fits."""


class GenerateConfig(PodConfig):
    """What the generator pod does."""

    kind: Literal["Generate"] = "Generate"
    taxonomy: GitCheckout
    """The taxonomy repository, pinned to the run's commit."""
    base: str = "empty"
    leaves: Literal["changed", "all"] = "changed"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    teacher: TeacherConfig
    pipeline: PipelineRef = Field(default_factory=lambda: PipelineRef(builtin="simple"))
    scale: ScaleSpec = Field(default_factory=ScaleSpec)
    mixing: MixingSpec = Field(default_factory=MixingSpec)
    evaluation: HoldOutSpec = Field(default_factory=HoldOutSpec)
    """Seed examples held back from the teacher per leaf, written as `evaluation.jsonl`."""
    multiple_choice: MultipleChoiceConfig | None = None
    """Multiple-choice questions the teacher writes about each knowledge leaf; none when unset."""
    output: str
    """Artifact URI of the output folder (datasets, per-leaf checkpoints, the full report)."""
    leaf_failure_policy: Literal["FailRun", "SkipLeaf"] = "FailRun"
    """A leaf that yields no sample fails the run, or is skipped and listed (never every leaf)."""
    cache: LeafCacheConfig | None = None
    """The leaf cache; every leaf asks the teacher when unset."""
    shards: Annotated[int, Field(ge=1, le=MAX_SHARDS)] = 1
    """Pods the leaves are split across (SyntheticDataRun `parallelism`): each runs
    `labtune generate --shard INDEX` (in an Indexed Job, JOB_COMPLETION_INDEX), then one
    `labtune generate --mix` writes the datasets, the same bytes as with 1."""

    @model_validator(mode="after")
    def _one_hold_out_setting(self) -> GenerateConfig:
        # The CRD's CEL rule, for configs written by hand.
        if self.evaluation.held_out_seeds and self.evaluation.held_out_seed_fraction is not None:
            raise ValueError("set at most one of evaluation.heldOutSeeds or evaluation.heldOutSeedFraction")
        return self


class LeafSummary(ContractModel):
    """Samples kept after each stage for one leaf."""

    path: str
    stages: dict[str, int]


class GenerateSummary(ContractModel):
    """The termination-log summary."""

    taxonomy_commit: str
    teacher_model: str
    pipeline: str = ""
    outputs: GenerationOutputs
    leaves_done: int = 0
    leaves_total: int = 0
    samples_generated: int = 0
    """Rows the generation stages produced (before filters)."""
    samples_kept: int = 0
    """Samples that passed every filter."""
    stages: dict[str, int] = Field(default_factory=dict)
    """Samples kept after each pipeline stage, summed over leaves."""
    leaves: list[LeafSummary] = Field(default_factory=list)
    """Per leaf, as many as fit the termination log (all of them are in the report)."""
    report: str = ""
    """Artifact URI of the full JSON report (every leaf, every stage, drops by reason)."""
    failed_leaves: list[LeafFailure] = Field(default_factory=list)
    """Leaves skipped under leafFailurePolicy SkipLeaf, as many as fit (all are in the report)."""
    failed_leaf_count: int = 0
    cost: GenerationCost = Field(default_factory=GenerationCost)
    """Leaves reused from the cache or generated, and the teacher tokens this run spent."""


class ShardSummary(ContractModel):
    """The termination-log summary of one shard (`labtune generate --shard INDEX`)."""

    kind: Literal["Shard"] = "Shard"
    index: int
    shards: int
    leaves_done: int = 0
    leaves_total: int = 0
    samples_generated: int = 0
    samples_kept: int = 0
    failed_leaf_count: int = 0
    outcome: str
    """Artifact URI of the shard's outcome, which the mix step reads."""
