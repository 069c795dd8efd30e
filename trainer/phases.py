"""One training phase on the transformers Trainer: padding-free batches, checkpoints with held-out
evaluation every N steps and at the end, resume from the latest complete checkpoint."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import (
    DataCollatorWithFlattening,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from labtune.api.tuning_job_types import Phase, TrainingMetrics
from labtune.contract.train import PhaseSummary, TrainConfig
from labtune.trainer import worker_rank
from labtune.trainer.layout import (
    COMPLETE,
    PhaseResult,
    checkpoint_step,
    complete_checkpoints,
    remove_incomplete_checkpoints,
)
from labtune.trainer.loss import TrainedTokensTrainer
from labtune.trainer.masking import TokenizedSample
from labtune.trainer.preemption import Preempted, PreemptionCallback, StopRequest
from labtune.trainer.splits import PhaseData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchShape:
    micro_batch_size: int
    """Samples per process per forward pass."""
    accumulation: int
    """Forward passes per optimizer step."""


@dataclass(frozen=True)
class PhaseRun:
    """What a phase trained, with its wall time in this process (for tokens per second)."""

    result: PhaseResult
    tokens_this_run: int
    seconds_this_run: float


def batch_shape(effective_batch_size: int, max_micro_batch_size: int, world_size: int) -> BatchShape:
    """Splits the effective batch (samples per optimizer step over all processes) into micro
    batches no larger than max_micro_batch_size; the product is at least the effective batch size
    and as close to it as the split allows."""
    accumulation = math.ceil(effective_batch_size / (world_size * max_micro_batch_size))
    micro = math.ceil(effective_batch_size / (world_size * accumulation))
    return BatchShape(micro_batch_size=micro, accumulation=accumulation)


def estimated_steps(train_samples: int, epochs: int, shape: BatchShape, world_size: int) -> int:
    """Optimizer steps of a phase, computed as the Trainer does (for progress before it starts)."""
    batches = math.ceil(math.ceil(train_samples / world_size) / shape.micro_batch_size)
    return epochs * max(math.ceil(batches / shape.accumulation), 1)


def training_arguments(
    config: TrainConfig, phase: Phase, folder: Path, shape: BatchShape, evaluate: bool, world_size: int
) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    every = config.checkpoints.every_steps
    warmup = phase.warmup_steps if phase.warmup_steps is not None else (phase.warmup_ratio or 0)
    fsdp = config.method.type == "full" and cuda and world_size > 1
    # Activation checkpointing saves GPU memory; on CPU it only costs time.
    checkpointing = cuda if config.activation_checkpointing is None else config.activation_checkpointing
    return TrainingArguments(
        output_dir=str(folder),
        num_train_epochs=phase.epochs,
        learning_rate=phase.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=warmup,
        per_device_train_batch_size=shape.micro_batch_size,
        per_device_eval_batch_size=shape.micro_batch_size,
        gradient_accumulation_steps=shape.accumulation,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=every,
        # Checkpoints beyond `keep`, other than the best, are removed as training goes.
        save_total_limit=config.checkpoints.keep + 1,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=every,
        metric_for_best_model="eval_loss" if evaluate else None,
        greater_is_better=False,
        prediction_loss_only=True,
        include_num_input_tokens_seen="all",  # padding-free batches: every input token is real
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=cuda and not torch.cuda.is_bf16_supported(),
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        ddp_backend="gloo" if world_size > 1 and not cuda else None,
        ddp_find_unused_parameters=False,
        fsdp="full_shard auto_wrap" if fsdp else "",
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
    )


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint COMPLETE once every process has written its part of it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        worker_rank.barrier()
        if state.is_world_process_zero:
            (self.folder / f"checkpoint-{state.global_step}" / COMPLETE).touch()


def _tokens_seen(checkpoint: Path) -> int:
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return int(state.num_input_tokens_seen)


def _records(samples: list[TokenizedSample]) -> list[dict[str, list[int]]]:
    return [{"input_ids": s.input_ids, "labels": s.labels} for s in samples]


def train_phase(
    config: TrainConfig,
    phase: Phase,
    data: PhaseData,
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    folder: Path,
    callbacks: Sequence[TrainerCallback],
    stop: StopRequest,
    world_size: int,
) -> PhaseRun:
    """Trains the phase to its end (resuming from its latest complete checkpoint) and returns its
    result; raises Preempted when stopped on request after saving a checkpoint."""
    if worker_rank.rank() == 0:
        remove_incomplete_checkpoints(folder)
    checkpoints = complete_checkpoints(folder)
    shape = batch_shape(phase.effective_batch_size, config.micro_batch_size, world_size)
    evaluate = bool(data.held_out)
    preemption = PreemptionCallback(stop)
    trainer = TrainedTokensTrainer(
        model=model,
        args=training_arguments(config, phase, folder, shape, evaluate, world_size),
        train_dataset=_records(data.train),
        eval_dataset=_records(data.held_out) if evaluate else None,
        data_collator=DataCollatorWithFlattening(),  # type: ignore[no-untyped-call]
        processing_class=tokenizer,
        callbacks=[*callbacks, CheckpointMarker(folder), preemption],
    )
    trainer.remove_callback(PrinterCallback)  # ProgressCallback logs readable lines instead
    tokens_before = _tokens_seen(checkpoints[-1]) if checkpoints else 0
    if checkpoints:
        log.info("phase %s resumes from its checkpoint %s", phase.name, checkpoints[-1].name)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
    seconds = time.monotonic() - started
    if preemption.preempted:
        raise Preempted(f"phase {phase.name} stopped at step {trainer.state.global_step}")
    state = trainer.state
    return PhaseRun(
        result=_result(phase, data, state, folder),
        tokens_this_run=state.num_input_tokens_seen - tokens_before,
        seconds_this_run=seconds,
    )


def final_metrics(log_history: Sequence[Mapping[str, Any]]) -> TrainingMetrics:
    """The phase's last logged loss, eval loss and learning rate. A phase shorter than
    `loggingSteps` logs no loss of its own; the Trainer's closing `train_loss` (the mean over the
    run) stands in, so status always has a loss."""
    losses = [entry for entry in log_history if "loss" in entry]
    evals = [entry for entry in log_history if "eval_loss" in entry]
    closing = [entry["train_loss"] for entry in log_history if "train_loss" in entry]
    loss = losses[-1]["loss"] if losses else closing[-1] if closing else None
    return TrainingMetrics(
        loss=loss,
        eval_loss=evals[-1]["eval_loss"] if evals else None,
        learning_rate=losses[-1].get("learning_rate") if losses else None,
    )


def _result(phase: Phase, data: PhaseData, state: TrainerState, folder: Path) -> PhaseResult:
    best = Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None
    if best is None:  # no held-out samples: the last checkpoint is the result
        best = complete_checkpoints(folder)[-1].name
    return PhaseResult(
        best_checkpoint=best,
        best_step=checkpoint_step(folder / best) or 0,
        best_eval_loss=state.best_metric,
        metrics=final_metrics(state.log_history),
        summary=PhaseSummary(
            name=phase.name,
            steps=state.global_step,
            tokens=state.num_input_tokens_seen,
            train_samples=len(data.train),
            eval_samples=len(data.held_out),
            dropped_samples=data.dropped,
        ),
    )
