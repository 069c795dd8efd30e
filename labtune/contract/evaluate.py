"""The evaluation dataset (seed examples a SyntheticDataRun held back from the teacher, written by
the generator as `evaluation.jsonl` beside the phase datasets), and the config, results and summary
of the pod that scores models on it (`labtune evaluate --config FILE`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from labtune.api.tuning_job_types import BenchmarkSpec, EvalScores
from labtune.contract.common import ContractModel, LeafType, PodConfig
from labtune.contract.generate import TeacherConfig
from labtune.contract.train import ModelSource


class EvalExample(ContractModel):
    """One held-out question with its reference answer, as the taxonomy's author wrote them.

    Knowledge questions are asked closed-book (the model must have learnt the document); a grounded
    skill's question comes with its context, as in training."""

    id: str = Field(min_length=1)
    """Stable across runs of the same taxonomy commit: the leaf, the seed's position, its text."""
    leaf: str
    """The leaf's qna.yaml, relative to the taxonomy root."""
    leaf_type: LeafType
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    context: str | None = None
    """The grounded skill's context given with the question (None for knowledge and freeform)."""


Name = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
"""A model's or benchmark's name (a lowercase RFC 1123 label): a key of the summary and results."""


class EvalModel(ContractModel):
    """One model to score: a base (a Hugging Face folder, a .gguf file or a merged model), or an
    adapter over a base. Models over the same base share one copy of it: the adapters are loaded
    onto it side by side and the base itself is scored with them disabled."""

    name: Name
    base: ModelSource
    adapter: str | None = None
    """Artifact URI of a LoRA/QLoRA adapter folder (the trainer's `<output>/adapter`)."""


class Generation(ContractModel):
    """Generated answers, scored against the reference: exact match, contains, ROUGE-L. Greedy
    decoding, so the scores are reproducible."""

    enabled: bool = True
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 128


class JudgeConfig(ContractModel):
    """A judge model grading each generated answer 1 to 10 against its reference answer
    (MT-Bench-branch style): an OpenAI-compatible endpoint, or a model in-process (transformers)."""

    teacher: TeacherConfig
    """The judge's backend, as a generator's teacher: url, model, API key, CA, concurrency,
    deadlines and retries."""


class ReferenceBenchmark(ContractModel):
    """Questions with reference answers (EvalExample JSONL, the generator's `evaluation.jsonl`).
    Each question is asked as the training data asks it: the grounded skill's context, a blank
    line, the question, as the user turn, after the optional system prompt."""

    type: Literal["reference"]
    """The kind of benchmark; required, so that more kinds (multiple choice, a judge) can join."""
    name: Name
    dataset: str
    """Artifact URI of the JSONL file."""
    system_prompt: str | None = None
    """The system turn the training samples had (none by default, as the shipped pipelines)."""
    likelihood: bool = True
    """Mean per-token negative log-likelihood of each reference answer given its question."""
    generation: Generation = Field(default_factory=Generation)
    judge: JudgeConfig | None = None
    """Grade the generated answers with a judge model (`judge`, the mean rating)."""

    @model_validator(mode="after")
    def _scores_something(self) -> ReferenceBenchmark:
        if not self.likelihood and not self.generation.enabled:
            raise ValueError(f"benchmark {self.name} scores nothing: enable likelihood or generation")
        if self.judge is not None and not self.generation.enabled:
            raise ValueError(f"benchmark {self.name}: a judge grades generated answers: enable generation")
        return self


class MultipleChoiceBenchmark(ContractModel):
    """Multiple-choice questions (ChoiceExample JSONL, MMLU-branch style), scored by
    lm-evaluation-harness: a custom task written from the dataset, the HF backend on the model in
    memory; `accuracy` and `accuracyNorm` (the choice's log-likelihood divided by its length)."""

    type: Literal["multipleChoice"]
    name: Name
    dataset: str
    """Artifact URI of the JSONL file."""


def _benchmark_type(value: object) -> object:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


Benchmark = Annotated[
    Annotated[ReferenceBenchmark, Tag("reference")]
    | Annotated[MultipleChoiceBenchmark, Tag("multipleChoice")],
    # pydantic's own words for a missing or unknown type name its internals ("Unable to extract tag
    # using discriminator"); a callable discriminator takes a message of ours.
    Discriminator(
        _benchmark_type,
        custom_error_type="benchmark_type",
        custom_error_message="set type to reference or multipleChoice",
    ),
]
"""Every kind of benchmark, told apart by `type`."""


JUDGE_CA_DIR = "/var/run/secrets/labtune/judges"
JUDGE_CA_FILE = "ca.crt"


def judge_ca_file(benchmark: str) -> str:
    """Where the operator mounts a judge's CA bundle (caSecretRef) in the trainer pod."""
    return f"{JUDGE_CA_DIR}/{benchmark}/{JUDGE_CA_FILE}"


def judge_api_key_env(benchmark: str) -> str:
    """The variable the operator fills from a judge's apiKeySecretRef in the trainer pod."""
    return f"LABTUNE_JUDGE_API_KEY_{benchmark.upper().replace('-', '_')}"


def _judge(spec: BenchmarkSpec) -> JudgeConfig | None:
    if spec.judge is None:
        return None
    endpoint = spec.judge.endpoint
    return JudgeConfig(
        teacher=TeacherConfig(
            model=endpoint.model,
            url=endpoint.url,
            api_key_env=judge_api_key_env(spec.name) if endpoint.api_key_secret_ref else None,
            ca_file=judge_ca_file(spec.name) if endpoint.ca_secret_ref else None,
            max_concurrency=spec.judge.max_concurrency,
            max_reply_bytes=endpoint.max_reply_bytes,
        )
    )


def from_spec(spec: BenchmarkSpec) -> Benchmark:
    """`labtune evaluate`'s form of a TuningJob's benchmark."""
    dataset = spec.dataset or ""  # TrainConfig's check: every benchmark has one
    if spec.type == "multipleChoice":
        return MultipleChoiceBenchmark(type="multipleChoice", name=spec.name, dataset=dataset)
    return ReferenceBenchmark(
        type="reference",
        name=spec.name,
        dataset=dataset,
        system_prompt=spec.system_prompt,
        likelihood=spec.likelihood,
        generation=Generation(enabled=spec.generation, max_new_tokens=spec.max_new_tokens),
        judge=_judge(spec),
    )


class EvaluateConfig(PodConfig):
    """What the evaluation pod does: every model on every benchmark."""

    kind: Literal["Evaluate"] = "Evaluate"
    models: Annotated[list[EvalModel], Field(min_length=1, max_length=16)]
    benchmarks: Annotated[list[Benchmark], Field(min_length=1, max_length=16)]
    output: str
    """Artifact URI of the output folder: `results.jsonl` (every example, every model) and
    `summary.json`."""
    micro_batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    """Examples per forward pass of the likelihood (packed into one row without padding) and of
    lm-eval's multiple choice."""
    generation_batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    """Questions answered at once (padded on the left): each decoding step reads every weight
    whatever the batch, so a larger batch costs little more per step (5 questions in one batch
    rather than 4 + 1: 1.3 s less of about 6 s per model, SmolLM2-135M on 2 CPU cores)."""

    @model_validator(mode="after")
    def _check_names(self) -> EvaluateConfig:
        for what, names in (
            ("model", [model.name for model in self.models]),
            ("benchmark", [benchmark.name for benchmark in self.benchmarks]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be unique, got {names}")
        return self


class ExampleResult(ContractModel):
    """One line of `<output>/results.jsonl`: one example scored for one model; a score the
    benchmark did not compute is left out."""

    benchmark: str
    model: str
    id: str
    leaf: str
    leaf_type: LeafType
    nll: float | None = None
    """Mean per-token negative log-likelihood (nats) of the reference answer."""
    answer_tokens: int | None = None
    """How many tokens the likelihood is the mean of."""
    generated: str | None = None
    """The model's greedy answer."""
    exact_match: bool | None = None
    contains: bool | None = None
    rouge_l: float | None = None
    correct: bool | None = None
    """A multiple-choice question answered right (the likeliest choice is the answer)."""
    correct_norm: bool | None = None
    """The same with each choice's log-likelihood divided by its length in bytes."""
    judge: float | None = None
    """The judge's rating of the generated answer, 1 to 10 (absent: no judge, or no rating)."""


class BenchmarkScores(ContractModel):
    """A benchmark's scores over all its examples."""

    name: str
    examples: int
    leaves: int
    models: dict[str, EvalScores]
    """Scores by model name."""


class LeafScores(ContractModel):
    """A benchmark's scores over one taxonomy leaf's examples."""

    benchmark: str
    leaf: str
    leaf_type: LeafType
    examples: int
    models: dict[str, EvalScores]


class EvaluateSummary(ContractModel):
    """The termination-log summary (also `<output>/summary.json`). The per-leaf list is shortened
    in the termination log when it would not fit (each benchmark's `leaves` counts them all);
    summary.json has every leaf, results.jsonl every example."""

    results: str
    """Artifact URI of results.jsonl."""
    results_sha256: str
    benchmarks: list[BenchmarkScores]
    leaves: list[LeafScores] = Field(default_factory=list)
    """By benchmark, then leaf path."""
    seconds: float
    """Wall time of the run, from loading the first model to the last score."""


class ChoiceExample(ContractModel):
    """One multiple-choice question about a leaf (MMLU-branch style), scored by log-likelihood of
    each choice through lm-evaluation-harness."""

    id: str = Field(min_length=1)
    leaf: str
    """The leaf's qna.yaml, relative to the taxonomy root."""
    leaf_type: LeafType = "knowledge"
    """Multiple-choice questions are written from knowledge documents (MMLU-branch)."""
    question: str = Field(min_length=1)
    choices: list[str] = Field(min_length=2, max_length=10)
    answer: int = Field(ge=0)
    """Index of the right choice."""

    @model_validator(mode="after")
    def _answer_is_a_choice(self) -> ChoiceExample:
        if self.answer >= len(self.choices):
            raise ValueError(
                f"answer {self.answer} is not the index of one of the {len(self.choices)} choices"
            )
        return self


Examples = list[EvalExample] | list[ChoiceExample]
"""A benchmark's examples, read and checked: reference questions or multiple-choice ones."""
