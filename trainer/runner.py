"""`labtune train`: the phases in order, the evaluation (when the config names benchmarks, see
`promotion`), then the outputs and the summary.

Started again with the same config, a run picks up where it stopped: finished phases are read
from their result.json, the current phase resumes from its latest complete checkpoint, and a
finished run only reports its summary again."""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path

from transformers import PreTrainedTokenizerBase, set_seed

from labtune.api.tuning_job_types import CheckpointRecord, TuningOutput
from labtune.contract import ConfigError, resolve_artifact
from labtune.contract.train import TrainConfig, TrainSummary
from labtune.trainer import worker_rank
from labtune.trainer.dataset_reader import read_samples
from labtune.trainer.export import export_outputs
from labtune.trainer.layout import Layout, PhaseResult, write_text_atomic
from labtune.trainer.modeling import check_base_model, load_tokenizer, phase_model
from labtune.trainer.phases import PhaseRun, batch_shape, estimated_steps, train_phase
from labtune.trainer.preemption import Preempted, StopRequest
from labtune.trainer.promotion import evaluate_run
from labtune.trainer.splits import PhaseData, prepare_phase_data, split_samples
from labtune.trainer.trainer_metrics import ProgressCallback, RunProgress, TrainerMetrics

log = logging.getLogger(__name__)

# Settings that may differ between a run and its restart (they do not change what is trained).
_RUNTIME_FIELDS = {"artifact_root", "metrics_port", "termination_log", "logging_steps"}


def train(config: TrainConfig, stop: StopRequest) -> TrainSummary:
    """Runs (or resumes) the job and returns its summary; raises ConfigError on bad input and
    Preempted when stopped by a stop request after saving a checkpoint."""
    layout = Layout(resolve_artifact(config.output, config.artifact_root), config.output)
    if layout.summary.exists():
        log.info("the run in %s is done; reporting its summary again", config.output)
        return TrainSummary.model_validate_json(layout.summary.read_text())
    base = resolve_artifact(config.base_model.uri, config.artifact_root)
    check_base_model(base, config.base_model.uri)
    tokenizer = load_tokenizer(base, config.base_model.chat_template)
    data = _phase_data(config, tokenizer)
    _check_same_run(config, layout)
    start = _Start(config, layout)
    results, runs = _train_phases(config, layout, base, tokenizer, data, stop, start)
    restarts = start.record()  # recorded already, unless every phase was done before this start
    last = results[-1]
    output, evaluation = TuningOutput(), None
    if worker_rank.rank() == 0:
        best = layout.phase(config.phases[-1].name) / last.best_checkpoint
        if config.evaluation.benchmarks:
            best, evaluation = evaluate_run(config, layout, last, stop)
        output = export_outputs(config, layout, base, best, tokenizer)
    seconds = sum(run.seconds_this_run for run in runs)
    summary = TrainSummary(
        output=output,
        metrics=last.metrics.model_copy(
            update={"tokens_per_second": sum(r.tokens_this_run for r in runs) / seconds if seconds else None}
        ),
        best_eval_loss=last.best_eval_loss,
        steps=sum(r.summary.steps for r in results),
        tokens=sum(r.summary.tokens for r in results),
        checkpoints=[
            CheckpointRecord(
                phase=phase.name,
                step=result.best_step,
                uri=layout.uri_of(layout.phase(phase.name) / result.best_checkpoint),
                eval_loss=result.best_eval_loss,
            )
            for phase, result in zip(config.phases, results, strict=True)
        ],
        phases=[r.summary for r in results],
        restarts=restarts,
        evaluation=evaluation,
    )
    if worker_rank.rank() == 0:
        write_text_atomic(layout.summary, summary.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    else:
        await_summary(layout, stop)
    return TrainSummary.model_validate_json(layout.summary.read_text())


def await_summary(layout: Layout, stop: StopRequest, poll_s: float = 1.0) -> None:
    """The other processes wait for the first one's summary on the shared output folder rather
    than at a collective barrier: the first process evaluates and exports alone for as long as
    that takes, where a barrier fails after the process group's timeout (30 minutes). When the
    first process fails, torchrun stops this one; when the pod is stopped, it exits preempted."""
    while not layout.summary.exists():
        if stop.requested:
            raise Preempted("stopped while the first process evaluates and exports")
        time.sleep(poll_s)


def _recorded(config: TrainConfig) -> str:
    return json.dumps(config.model_dump(mode="json", exclude=_RUNTIME_FIELDS), sort_keys=True)


def _check_same_run(config: TrainConfig, layout: Layout) -> None:
    """A restart must not mix checkpoints of a different config into its run."""
    if layout.config.exists() and layout.config.read_text() != _recorded(config):
        raise ConfigError(f"output {config.output} holds a run of a different config; use a new output")


class _Start:
    """Records the start of the run in its output folder (its config, the count of starts) once
    the config has passed its last check, the first model loading: a config that fails leaves the
    folder as it was, so the corrected one is not refused there as a run of a different config."""

    def __init__(self, config: TrainConfig, layout: Layout) -> None:
        self._config, self._layout = config, layout
        self._restarts: int | None = None

    def record(self) -> int:
        """How many restarts came before this start; the first call records it."""
        if self._restarts is None:
            self._restarts = 0
            self._layout.root.mkdir(parents=True, exist_ok=True)
            if worker_rank.rank() == 0:
                if not self._layout.config.exists():
                    write_text_atomic(self._layout.config, _recorded(self._config))
                self._layout.remove_temporaries()
                self._restarts = self._layout.count_start()
        return self._restarts


def _phase_data(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, PhaseData]:
    """Every phase's samples, read and tokenized up front: bad data fails before any training."""
    splits = {}
    for dataset in sorted({phase.dataset for phase in config.phases}):
        path = resolve_artifact(getattr(config.datasets, dataset), config.artifact_root)
        splits[dataset] = split_samples(read_samples(path), config.evaluation.held_out_fraction, config.seed)
    return {
        phase.name: prepare_phase_data(splits[phase.dataset], tokenizer, phase.max_seq_len, phase.name)
        for phase in config.phases
    }


def _read_result(layout: Layout, phase: str) -> PhaseResult | None:
    path = layout.phase_result(phase)
    return PhaseResult.model_validate_json(path.read_text()) if path.exists() else None


def _train_phases(
    config: TrainConfig,
    layout: Layout,
    base: Path,
    tokenizer: PreTrainedTokenizerBase,
    data: dict[str, PhaseData],
    stop: StopRequest,
    run_start: _Start,
) -> tuple[list[PhaseResult], list[PhaseRun]]:
    """Each phase's result (trained now or read back) and the runs made by this process."""
    world = worker_rank.world_size()
    done = {phase.name: _read_result(layout, phase.name) for phase in config.phases}
    progress = RunProgress(
        {
            phase.name: result.summary.steps
            if (result := done[phase.name])
            else estimated_steps(
                len(data[phase.name].train),
                phase.epochs,
                batch_shape(phase.effective_batch_size, config.micro_batch_size, world),
                world,
            )
            for phase in config.phases
        }
    )
    metrics = TrainerMetrics(config.metrics_port) if worker_rank.local_rank() == 0 else None
    results: list[PhaseResult] = []
    runs: list[PhaseRun] = []
    start: Path | None = None
    try:
        for phase in config.phases:
            result = done[phase.name]
            if result is None:
                if stop.requested:
                    raise Preempted(f"stopped before phase {phase.name}")
                phase_data = data[phase.name]
                log.info(
                    "phase %s: %d training samples, %d held out, %d dropped (longer than %d tokens)",
                    phase.name,
                    len(phase_data.train),
                    len(phase_data.held_out),
                    phase_data.dropped,
                    phase.max_seq_len,
                )
                set_seed(config.seed)  # the adapter's initial weights, like every run of this config
                model = phase_model(base, config.method, start)
                run_start.record()
                callbacks = [ProgressCallback(phase.name, progress, metrics)]
                run = train_phase(
                    config,
                    phase,
                    phase_data,
                    model,
                    tokenizer,
                    layout.phase(phase.name),
                    callbacks,
                    stop,
                    world,
                )
                del model
                gc.collect()
                runs.append(run)
                result = run.result
                if worker_rank.rank() == 0:
                    write_text_atomic(layout.phase_result(phase.name), result.model_dump_json(indent=2))
            results.append(result)
            start = layout.phase(phase.name) / result.best_checkpoint
    finally:
        if metrics is not None:
            metrics.close()
    return results, runs
