"""The TuningJob kind: one phased tuning of a base model (LoRA, QLoRA or full)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from labtune.api.base import (
    ApiModel,
    ArtifactURI,
    BatchSpec,
    CommitSHA,
    LabelName,
    LocalObjectReference,
    LongText,
    RunStatusBase,
    SchedulingSpec,
    Sha256,
    cel,
    model_rules,
    rules,
)
from labtune.api.resource import PrinterColumn, Resource
from labtune.api.synthetic_data_run_types import DatasetOutput, TeacherEndpoint


class BaseModelSpec(ApiModel):
    """The model to tune."""

    uri: ArtifactURI
    """A Hugging Face model folder, or a `.gguf` file (dequantized on load)."""
    chat_template: LongText | None = None
    """Jinja chat template to use when the model's tokenizer has none."""


class DataSpec(ApiModel):
    """Training data: the outputs of a SyntheticDataRun, or dataset URIs given directly."""

    model_config = model_rules(
        cel(
            "has(self.syntheticDataRunRef) != (has(self.knowledge) || has(self.skills))",
            "set either data.syntheticDataRunRef or dataset URIs (data.knowledge / data.skills), "
            "exactly one of the two",
        )
    )

    synthetic_data_run_ref: LocalObjectReference | None = None
    """Use the datasets of this SyntheticDataRun; the job waits until it has succeeded."""
    knowledge: ArtifactURI | None = None
    """JSONL dataset for phases that use `knowledge`."""
    skills: ArtifactURI | None = None
    """JSONL dataset for phases that use `skills`."""


class LoraSpec(ApiModel):
    """Low-rank adapter settings."""

    rank: Annotated[int, Field(ge=1, le=1024)] = 16
    """Adapter rank r."""
    alpha: Annotated[float, Field(gt=0.0, le=4096.0)] = 32.0
    """Scaling numerator (the update is scaled by alpha / rank)."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    """Dropout on the adapter input."""
    target_modules: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]],
        Field(min_length=1, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=lambda: ["all-linear"])
    """Module names to adapt; `all-linear` adapts every linear layer but the output head."""


class MethodSpec(ApiModel):
    """How the weights are tuned."""

    model_config = model_rules(
        cel("self.type != 'full' || !has(self.lora)", "lora settings apply only to method.type lora or qlora")
    )

    type: Literal["lora", "qlora", "full"] = "lora"
    """`lora`: adapter on the frozen base; `qlora`: adapter on a 4-bit base (CUDA only); `full`:
    every weight is trained."""
    lora: LoraSpec | None = None
    """Adapter settings (defaults apply for lora and qlora when unset)."""


class Phase(ApiModel):
    """One training phase. Each phase starts from the result of the one before."""

    model_config = model_rules(
        cel(
            "!(has(self.warmupSteps) && has(self.warmupRatio))",
            "set at most one of warmupSteps or warmupRatio",
        )
    )

    name: LabelName
    """Phase name, unique within the job (e.g. `knowledge`, `skills`)."""
    dataset: Literal["knowledge", "skills"]
    """Which dataset the phase trains on."""
    epochs: Annotated[int, Field(ge=1, le=100)] = 1
    """Passes over the dataset."""
    learning_rate: Annotated[
        float,
        Field(
            json_schema_extra=rules(
                cel("self > 0.0 && self <= 0.1", "learning rate must be greater than 0 and at most 0.1")
            )
        ),
    ] = 2e-4
    """Peak learning rate."""
    effective_batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    """Samples per optimizer step across all GPUs and nodes (gradient accumulation is derived)."""
    max_seq_len: Annotated[int, Field(ge=64, le=262_144)] = 4096
    """Longest sample in tokens; longer samples are dropped and counted."""
    warmup_steps: Annotated[int, Field(ge=0)] | None = None
    """Linear warm-up steps."""
    warmup_ratio: Annotated[float, Field(ge=0.0, le=0.5)] | None = None
    """Warm-up as a fraction of the phase's steps."""


def _default_phases() -> list[Phase]:
    return [
        Phase(name="knowledge", dataset="knowledge", learning_rate=2e-4),
        Phase(name="skills", dataset="skills", learning_rate=1e-4),
    ]


Metric = Literal["nll", "exactMatch", "contains", "rougeL", "judge", "accuracy", "accuracyNorm"]
"""A benchmark score: `nll` (mean per-token negative log-likelihood of the reference answers, lower
is better), `exactMatch`, `contains`, `rougeL` (of the generated answers), `judge` (a judge
model's mean rating of them, 1 to 10), `accuracy`, `accuracyNorm` (of multiple-choice answers;
higher is better)."""

BenchmarkType = Literal["reference", "multipleChoice"]

GENERATION_METRICS = ("exactMatch", "contains", "rougeL")
CHOICE_METRICS = ("accuracy", "accuracyNorm")

HELD_OUT_BENCHMARK = "held-out"
"""A default benchmark's name: the SyntheticDataRun's held-out seed questions."""
MULTIPLE_CHOICE_BENCHMARK = "multiple-choice"
"""A default benchmark's name: the multiple-choice questions the SyntheticDataRun's teacher wrote."""
DEFAULT_BENCHMARKS = (HELD_OUT_BENCHMARK, MULTIPLE_CHOICE_BENCHMARK)


class JudgeSpec(ApiModel):
    """A judge model grading each generated answer 1 to 10 against its reference answer
    (InstructLab's MT-Bench-branch), over an OpenAI-compatible API."""

    endpoint: TeacherEndpoint
    """The judge's server; its API key and CA reach the trainer pod only through secretKeyRef and a
    Secret volume."""
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    """Requests in flight at once."""


class BenchmarkSpec(ApiModel):
    """Questions that the base model, the candidate checkpoints and the output are scored on
    after training: with reference answers (the generator's `evaluation.jsonl`), or multiple
    choice (its `evaluation-choices.jsonl`, scored by lm-evaluation-harness)."""

    model_config = model_rules(
        cel(
            "!has(self.judge) || (self.type == 'reference' && self.generation)",
            "a judge grades generated answers: it needs type reference and generation",
        )
    )

    name: LabelName
    """Unique within the job; gates and checkpoint choice name it."""
    type: BenchmarkType = "reference"
    """`reference`: questions with reference answers (`nll`, and the generation scores);
    `multipleChoice`: the likeliest choice must be the right one (`accuracy`, `accuracyNorm`)."""
    dataset: ArtifactURI | None = None
    """The questions; unset: the SyntheticDataRun's evaluation dataset of this type."""
    likelihood: bool = True
    """Score the reference answers' likelihood (`nll`); reference benchmarks only."""
    generation: bool = True
    """Generate answers greedily and score them against the references (`exactMatch`, `contains`,
    `rougeL`); reference benchmarks only."""
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 128
    """Longest generated answer."""
    system_prompt: LongText | None = None
    """The system turn the training samples had (none with the shipped pipelines)."""
    judge: JudgeSpec | None = None
    """Grade the generated answers with a judge model (`judge`); reference benchmarks with
    generation only."""

    def computes(self, metric: Metric) -> bool:
        """Whether the benchmark scores `metric` (the CEL rule `_metric_computed` says the same)."""
        if self.type == "multipleChoice":
            return metric in CHOICE_METRICS
        if metric == "judge":
            return self.judge is not None
        return self.likelihood if metric == "nll" else metric in GENERATION_METRICS and self.generation


METRIC_NEEDS = (
    "nll needs a reference benchmark with likelihood, exactMatch, contains and rougeL one with "
    "generation, judge one with a judge, accuracy and accuracyNorm a multipleChoice benchmark"
)
"""What each metric needs of its benchmark, for messages."""


class MetricRef(ApiModel):
    """One score of one benchmark."""

    benchmark: LabelName
    """A benchmark of `evaluation.benchmarks` (`held-out` by default)."""
    metric: Metric = "nll"
    """Which of its scores."""


class GateSpec(MetricRef):
    """The bar the tuned model must clear over the base model to be promoted (`status.output`)."""

    min_improvement: Annotated[float, Field(ge=-1000.0, le=1000.0)] = 0.0
    """Least improvement over the base: base minus tuned for `nll`, tuned minus base for the
    other scores (a fraction: 0.1 is ten points of exact match). 0 passes any model at least as
    good as the base; a negative value tolerates that much regression."""


def _benchmark_named(field: str) -> dict[str, str]:
    return cel(
        f"!has(self.{field}) || (has(self.benchmarks) ? "
        f"self.benchmarks.exists(b, b.name == self.{field}.benchmark) : "
        f"self.{field}.benchmark in {list(DEFAULT_BENCHMARKS)})",
        f"evaluation.{field}.benchmark must name one of evaluation.benchmarks "
        f"({' or '.join(DEFAULT_BENCHMARKS)} when benchmarks is unset)",
    )


def _metric_computed(field: str) -> dict[str, str]:
    metric = f"self.{field}.metric"
    choice = f"{metric} in {list(CHOICE_METRICS)}"
    return cel(
        f"!has(self.{field}) || (has(self.benchmarks) ? self.benchmarks.all(b, "
        f"b.name != self.{field}.benchmark || ({choice} ? b.type == 'multipleChoice' : "
        f"b.type == 'reference' && ({metric} == 'nll' ? b.likelihood : "
        f"{metric} == 'judge' ? has(b.judge) : b.generation))) : "
        f"(self.{field}.benchmark == '{MULTIPLE_CHOICE_BENCHMARK}') == ({choice}))",
        f"evaluation.{field}: its benchmark does not compute that metric ({METRIC_NEEDS})",
    )


class EvaluationSpec(ApiModel):
    """Held-out loss during training, and benchmarks scored after it."""

    model_config = model_rules(
        _benchmark_named("selectBy"),
        _benchmark_named("gate"),
        _metric_computed("selectBy"),
        _metric_computed("gate"),
    )

    held_out_fraction: Annotated[float, Field(ge=0.0, le=0.5)] = 0.05
    """Fraction of each dataset kept out of training for evaluation loss."""
    benchmarks: (
        Annotated[
            list[BenchmarkSpec],
            Field(
                max_length=8,
                json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
            ),
        ]
        | None
    ) = None
    """Scored on the base model and the tuned model after training. Unset: the SyntheticDataRun's
    evaluation datasets, those it wrote: `held-out` (likelihood and generation on its held-out
    seed questions) and `multiple-choice` (its teacher's multiple-choice questions); empty: none."""
    select_by: MetricRef | None = None
    """The score that chooses the output among the last phase's saved checkpoints (each is
    scored); unset: the lowest held-out loss."""
    gate: GateSpec | None = None
    """A run whose tuned model does not beat the base by this much fails (reason `GateFailed`)
    and reports no `status.output`; unset: no gate."""


class CheckpointSpec(ApiModel):
    """Checkpointing."""

    every_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    """Save every this many optimizer steps (and at each phase end and on preemption)."""
    keep: Annotated[int, Field(ge=1, le=100)] = 3
    """Checkpoints kept per phase besides the best one."""


class OutputSpec(ApiModel):
    """Where the result goes."""

    uri: ArtifactURI | None = None
    """Output folder; under the operator's default artifact claim when unset."""
    merge_adapter: bool = False
    """Also save the adapter merged into the base as a full model."""


class TrainingResources(SchedulingSpec):
    """Compute for the trainer: GPUs per node and number of nodes, plus placement."""

    gpus_per_node: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs per pod (`nvidia.com/gpu`); 0 trains on CPU."""
    nodes: Annotated[int, Field(ge=1, le=64)] = 1
    """Pods (nodes) to train across; more than one runs torchrun over an Indexed Job."""


_QLORA_NEEDS_GPUS = cel(
    "self.method.type != 'qlora' || self.resources.gpusPerNode > 0",
    "method qlora needs CUDA GPUs: set resources.gpusPerNode to 1 or more",
)


class TuningJobTemplateSpec(BatchSpec):
    """A TuningJob's spec without its data (a LabPipeline's template: the pipeline's
    SyntheticDataRun of the same revision is the data)."""

    model_config = model_rules(_QLORA_NEEDS_GPUS)

    base_model: BaseModelSpec
    """The model to tune."""
    method: MethodSpec = Field(default_factory=MethodSpec)
    """LoRA, QLoRA or full fine-tune."""
    phases: Annotated[
        list[Phase],
        Field(
            max_length=8,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                **rules(cel("self.size() > 0", "phases must list at least one phase")),
            },
        ),
    ] = Field(default_factory=_default_phases)
    """Phases in order; knowledge then skills by default."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """Held-out evaluation."""
    checkpoints: CheckpointSpec = Field(default_factory=CheckpointSpec)
    """Checkpointing."""
    output: OutputSpec = Field(default_factory=OutputSpec)
    """Where the adapter (and merged model) go."""
    resources: TrainingResources = Field(default_factory=TrainingResources)
    """GPUs, nodes and placement."""


class TuningJobSpec(TuningJobTemplateSpec):
    """Desired state of a TuningJob. Immutable once the job has started, except `suspend`."""

    model_config = model_rules(
        _QLORA_NEEDS_GPUS,
        cel(
            "has(self.data.syntheticDataRunRef) || self.phases.all(p, "
            "(p.dataset == 'knowledge' && has(self.data.knowledge)) "
            "|| (p.dataset == 'skills' && has(self.data.skills)))",
            "every phase's dataset must be given: set data.knowledge / data.skills for the "
            "datasets the phases use",
        ),
        cel(
            "has(self.data.syntheticDataRunRef) || !has(self.evaluation.benchmarks) "
            "|| self.evaluation.benchmarks.all(b, has(b.dataset))",
            "a benchmark without a dataset uses the SyntheticDataRun's evaluation dataset of its type: "
            "set its dataset, or data.syntheticDataRunRef",
        ),
        cel(
            "has(self.data.syntheticDataRunRef) || has(self.evaluation.benchmarks) "
            "|| !(has(self.evaluation.gate) || has(self.evaluation.selectBy))",
            "evaluation.gate and evaluation.selectBy need benchmarks: list them in "
            "evaluation.benchmarks, or use data.syntheticDataRunRef for the default ones",
        ),
    )

    data: DataSpec
    """Training data."""


class TrainingProgress(ApiModel):
    """Progress of a running job."""

    percent: Annotated[int, Field(ge=0, le=100)] = 0
    """Steps done over all phases, in percent."""
    step: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps done over all phases."""
    total_steps: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps over all phases."""
    epoch: Annotated[float, Field(ge=0.0)] = 0.0
    """Epoch within the current phase (fractional)."""
    eta_seconds: Annotated[int, Field(ge=0)] | None = None
    """Estimated seconds until done."""


class TrainingMetrics(ApiModel):
    """Latest training metrics."""

    loss: float | None = None
    """Training loss."""
    eval_loss: float | None = None
    """Held-out loss at the last evaluation."""
    learning_rate: float | None = None
    """Current learning rate."""
    tokens_per_second: float | None = None
    """Trained (non-padding) tokens per second, all workers."""


class CheckpointRecord(ApiModel):
    """A saved checkpoint."""

    phase: LabelName
    """Phase it belongs to."""
    step: Annotated[int, Field(ge=0)]
    """Optimizer step within the phase."""
    uri: ArtifactURI
    """Where it is."""
    eval_loss: float | None = None
    """Held-out loss at this checkpoint."""


class TuningOutput(ApiModel):
    """The result of a succeeded job."""

    adapter: ArtifactURI | None = None
    """The adapter (LoRA/QLoRA)."""
    adapter_sha256: Sha256 | None = None
    """Digest of the adapter weights."""
    model: ArtifactURI | None = None
    """The full model (full fine-tune, or the merged adapter when asked)."""
    model_sha256: Sha256 | None = None
    """Digest of the model weights."""


class EvalScores(ApiModel):
    """A model's mean scores on one benchmark; a score the benchmark does not compute is left out."""

    nll: float | None = None
    """Mean over the questions of the reference answer's mean per-token negative log-likelihood
    (nats; lower is better)."""
    exact_match: float | None = None
    """Fraction of generated answers equal to the reference (case, punctuation and spacing aside)."""
    contains: float | None = None
    """Fraction of generated answers that contain the reference's words in order, contiguous."""
    rouge_l: float | None = None
    """Mean ROUGE-L F-measure of the generated answers against the references."""
    accuracy: float | None = None
    """Fraction of multiple-choice questions answered right (by lm-evaluation-harness)."""
    accuracy_norm: float | None = None
    """The same, each choice's log-likelihood divided by its length."""
    judge: float | None = None
    """Mean rating of the generated answers by a judge model, 1 to 10."""

    def get(self, metric: Metric) -> float | None:
        return {
            "nll": self.nll,
            "exactMatch": self.exact_match,
            "contains": self.contains,
            "rougeL": self.rouge_l,
            "judge": self.judge,
            "accuracy": self.accuracy,
            "accuracyNorm": self.accuracy_norm,
        }[metric]


class BenchmarkResult(ApiModel):
    """The base and the tuned model on one benchmark."""

    name: LabelName
    """The benchmark."""
    examples: Annotated[int, Field(ge=0)]
    """Questions scored."""
    base: EvalScores
    """The base model's scores."""
    tuned: EvalScores
    """The output's scores."""


class ChosenCheckpoint(ApiModel):
    """The checkpoint the output was exported from, and why."""

    phase: LabelName
    """Its phase (the last)."""
    step: Annotated[int, Field(ge=0)]
    """Its step."""
    uri: ArtifactURI
    """Where it is."""
    selected_by: Annotated[str, Field(max_length=200)]
    """`evalLoss`, or `<benchmark>/<metric>` (evaluation.selectBy)."""
    value: float | None = None
    """Its value of that score."""
    candidates: Annotated[int, Field(ge=1)]
    """Checkpoints compared."""


class GateResult(ApiModel):
    """The promotion gate, applied."""

    benchmark: LabelName
    """The benchmark."""
    metric: Metric
    """The score compared."""
    base: float
    """The base model's score."""
    tuned: float
    """The tuned model's score."""
    improvement: float
    """Base minus tuned for `nll`, tuned minus base for the others."""
    min_improvement: float
    """The bar."""
    passed: bool
    """Whether the improvement reached the bar."""


class TuningEvaluation(ApiModel):
    """Benchmarks of the base model and the tuned model, scored after training."""

    benchmarks: Annotated[list[BenchmarkResult], Field(max_length=8)]
    """Per benchmark, base and tuned scores."""
    checkpoint: ChosenCheckpoint
    """The checkpoint the output came from, and why."""
    gate: GateResult | None = None
    """The gate, when the spec sets one."""
    summary: ArtifactURI
    """The evaluation's summary.json: every model, benchmark and taxonomy leaf."""
    seconds: Annotated[float, Field(ge=0.0)]
    """Wall time the evaluation added to the run."""


class Lineage(ApiModel):
    """Everything needed to rebuild the result."""

    taxonomy_revision: CommitSHA | None = None
    """Taxonomy commit the data came from."""
    datasets: Annotated[list[DatasetOutput], Field(max_length=8)] = Field(default_factory=list)
    """Datasets trained on, with digests."""
    base_model: ArtifactURI | None = None
    """The base model."""
    config_sha256: Sha256 | None = None
    """Digest of the trainer config handed to the pod."""


class TuningJobStatus(RunStatusBase):
    """Observed state of a TuningJob."""

    current_phase: LabelName | None = None
    """The phase training now."""
    progress: TrainingProgress | None = None
    """Progress while running."""
    metrics: TrainingMetrics | None = None
    """Latest metrics."""
    checkpoints: Annotated[list[CheckpointRecord], Field(max_length=64)] = Field(default_factory=list)
    """Checkpoints saved."""
    output: TuningOutput | None = None
    """The result, once succeeded."""
    lineage: Lineage | None = None
    """Inputs of the run."""
    evaluation: TuningEvaluation | None = None
    """Base and tuned scores after training, the checkpoint chosen and the gate."""


class TuningJob(Resource):
    """One phased tuning of a base model on LAB data (knowledge, then skills with replay), with
    LoRA, QLoRA or a full fine-tune, on GPUs or CPU."""

    plural: ClassVar[str] = "tuningjobs"
    short_names: ClassVar[tuple[str, ...]] = ("tj",)
    mutable_after_start: ClassVar[frozenset[str] | None] = frozenset({"suspend"})
    immutable: ClassVar[frozenset[str]] = frozenset({"managedBy"})
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn("State", "string", ".status.state"),
        PrinterColumn("Method", "string", ".spec.method.type"),
        PrinterColumn("Phase", "string", ".status.currentPhase"),
        PrinterColumn("Progress%", "integer", ".status.progress.percent"),
        PrinterColumn("Loss", "number", ".status.metrics.loss"),
        PrinterColumn("Eval-Loss", "number", ".status.metrics.evalLoss", priority=1),
        PrinterColumn("Base-NLL", "number", ".status.evaluation.benchmarks[0].base.nll", priority=1),
        PrinterColumn("Tuned-NLL", "number", ".status.evaluation.benchmarks[0].tuned.nll"),
        PrinterColumn("Evaluated", "string", '.status.conditions[?(@.type=="Evaluated")].reason'),
        PrinterColumn("GPUs", "integer", ".spec.resources.gpusPerNode", priority=1),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', priority=1),
    )

    kind: Literal["TuningJob"] = "TuningJob"
    spec: TuningJobSpec
    status: TuningJobStatus | None = None
