"""Config and summary of the TuningJob pod (`labtune train --config FILE`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from labtune.api.tuning_job_types import (
    METRIC_NEEDS,
    CheckpointRecord,
    CheckpointSpec,
    EvaluationSpec,
    MethodSpec,
    Phase,
    TrainingMetrics,
    TuningEvaluation,
    TuningOutput,
)
from labtune.contract.common import ContractModel, PodConfig

MAX_LEARNING_RATE = 0.1


class ModelSource(ContractModel):
    """The base model: a Hugging Face folder or a .gguf file, as an artifact URI or local path."""

    uri: str
    chat_template: str | None = None
    """Jinja chat template to use when the model's tokenizer has none."""


class Datasets(ContractModel):
    """Dataset files by the name phases refer to."""

    knowledge: str | None = None
    skills: str | None = None


class Distributed(ContractModel):
    """How many trainer processes run. More than one in all: `labtune train` starts them under
    torchrun (DDP for LoRA/QLoRA, FSDP for a full fine-tune on GPUs). Across nodes the operator sets
    MASTER_ADDR and MASTER_PORT (node 0's address) and each pod's node rank comes from
    JOB_COMPLETION_INDEX (an Indexed Job) or NODE_RANK."""

    nodes: Annotated[int, Field(ge=1, le=64)] = 1
    procs_per_node: Annotated[int, Field(ge=1, le=16)] = 1
    """One per GPU; on CPU, processes sharing the node's cores (gloo)."""


class TrainConfig(PodConfig):
    """What the trainer pod does. The CRD's CEL rules are checked here too, so a config written
    by hand fails the same way."""

    kind: Literal["Train"] = "Train"
    base_model: ModelSource
    datasets: Datasets
    method: MethodSpec = Field(default_factory=MethodSpec)
    phases: Annotated[list[Phase], Field(min_length=1, max_length=8)]
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    checkpoints: CheckpointSpec = Field(default_factory=CheckpointSpec)
    output: str
    """Artifact URI of the output folder (checkpoints, adapter, merged model)."""
    merge_adapter: bool = False
    seed: int = 42
    micro_batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    """Most samples per process in one forward pass; gradient accumulation makes up the rest of
    each phase's effective batch size. The samples are packed into one row without padding."""
    activation_checkpointing: bool | None = None
    """Recompute activations in the backward pass to save memory; unset: on GPUs, off on CPU."""
    logging_steps: Annotated[int, Field(ge=1)] = 10
    """Optimizer steps between progress lines and metric updates."""
    distributed: Distributed = Field(default_factory=Distributed)

    @model_validator(mode="after")
    def _check_rules(self) -> TrainConfig:
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        for phase in self.phases:
            if getattr(self.datasets, phase.dataset) is None:
                raise ValueError(
                    f"phase {phase.name} trains on {phase.dataset}: set datasets.{phase.dataset}"
                )
            if not 0.0 < phase.learning_rate <= MAX_LEARNING_RATE:
                raise ValueError(f"phase {phase.name}: learning rate must be in (0, {MAX_LEARNING_RATE}]")
            if phase.warmup_steps is not None and phase.warmup_ratio is not None:
                raise ValueError(f"phase {phase.name}: set at most one of warmupSteps or warmupRatio")
        if self.method.type == "full" and self.method.lora is not None:
            raise ValueError("lora settings apply only to method.type lora or qlora")
        self._check_benchmarks()
        return self

    def _check_benchmarks(self) -> None:
        """The operator resolves every benchmark's dataset; a config written by hand must name it."""
        benchmarks = self.evaluation.benchmarks or []
        names = [benchmark.name for benchmark in benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluation.benchmarks: names must be unique, got {names}")
        for benchmark in benchmarks:
            if benchmark.dataset is None:
                raise ValueError(f"evaluation.benchmarks {benchmark.name}: set its dataset")
            if benchmark.judge is not None and not (benchmark.type == "reference" and benchmark.generation):
                raise ValueError(
                    f"evaluation.benchmarks {benchmark.name}: a judge grades generated answers: it needs "
                    "type reference and generation"
                )
        by_name = {benchmark.name: benchmark for benchmark in benchmarks}
        for field, ref in (("selectBy", self.evaluation.select_by), ("gate", self.evaluation.gate)):
            if ref is None:
                continue
            if ref.benchmark not in by_name:
                raise ValueError(
                    f"evaluation.{field}.benchmark {ref.benchmark} is not one of evaluation.benchmarks "
                    f"{names}"
                )
            if not by_name[ref.benchmark].computes(ref.metric):
                raise ValueError(
                    f"evaluation.{field}: benchmark {ref.benchmark} does not compute {ref.metric} "
                    f"({METRIC_NEEDS})"
                )


class PhaseSummary(ContractModel):
    """What one phase trained on and did."""

    name: str
    steps: int = 0
    tokens: int = 0
    """Input (non-padding) tokens processed, all processes."""
    train_samples: int = 0
    eval_samples: int = 0
    dropped_samples: int = 0
    """Samples longer than the phase's maxSeqLen, left out."""


class TrainSummary(ContractModel):
    """The termination-log summary (also written to `<output>/summary.json`)."""

    output: TuningOutput
    metrics: TrainingMetrics
    best_eval_loss: float | None = None
    steps: int = 0
    tokens: int = 0
    checkpoints: list[CheckpointRecord] = Field(default_factory=list)
    """The best checkpoint per phase (the full list is in the output folder)."""
    phases: list[PhaseSummary] = Field(default_factory=list)
    restarts: int = 0
    """How many times the run started again after it was stopped (preemption, a deleted pod)."""
    evaluation: TuningEvaluation | None = None
    """Base and tuned scores on the benchmarks, the checkpoint chosen and the gate."""
