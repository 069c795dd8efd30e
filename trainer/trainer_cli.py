"""`labtune train --config FILE` and `labtune evaluate --config FILE`: the trainer image's pod entry
points (tuning, and scoring models), also run by hand.

Exit codes (labtune.contract): 0 done; EXIT_CONFIG_ERROR bad config or data (one line on
stderr); EXIT_PREEMPTED stopped by SIGTERM (training: after saving a checkpoint); anything else a
failure. torch and transformers are imported inside the commands so that `labtune --help` stays
fast, and only once the config has passed the checks that need neither."""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import click
from pydantic import BaseModel

from labtune.contract import (
    EXIT_CONFIG_ERROR,
    EXIT_FAILED,
    EXIT_PREEMPTED,
    ConfigError,
    load_config,
    resolve_artifact,
    write_summary,
)
from labtune.contract.common import check_metrics_port, check_termination_log, output_path
from labtune.contract.evaluate import EvaluateConfig, Examples, from_spec
from labtune.contract.train import TrainConfig, TrainSummary
from labtune.trainer.dataset_reader import read_benchmark
from labtune.trainer.judge import JudgeError

log = logging.getLogger("labtune.trainer")

ADAPTER_CONFIG = "adapter_config.json"  # what makes a folder a peft adapter


def _config_option(model: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(path_type=Path),  # load_config reports a missing file or a folder: exit 78
        help=f"The config file (YAML or JSON, {model}).",
    )


@click.command()
@_config_option("labtune.contract.train.TrainConfig")
def train(config_path: Path) -> None:
    """Tune a base model in phases (LoRA, QLoRA or full) as the config says."""
    sys.exit(run(config_path))


def run(config_path: Path) -> int:
    """Trains (or starts torchrun to) and returns the process exit code."""
    # Light imports until this process is known to train: the torchrun launcher, the pod's main
    # process when there are several workers, never loads torch.
    from labtune.trainer import worker_rank
    from labtune.trainer.launcher import launch, needs_launch, record_exit

    _configure_logging(worker_rank.rank() == 0)
    try:
        config = load_config(config_path, TrainConfig)
        _check_paths(config)
        if not worker_rank.under_torchrun():
            # The pod's main process checks the port that this process (or, under torchrun, the
            # worker of local rank 0) serves metrics on only once torch is imported and the data
            # tokenized. Workers do not: another worker may be serving on it already.
            check_metrics_port(config.metrics_port)
        if needs_launch(config):
            return launch(config, config_path)
        code = _train(config)
    except ConfigError as error:
        click.echo(f"labtune train: {error}", err=True)
        code = EXIT_CONFIG_ERROR
    except JudgeError as error:  # after training: the checkpoints stay, a restart evaluates again
        click.echo(f"labtune train: {error}", err=True)
        code = EXIT_FAILED
    record_exit(code)
    return code


def _check_paths(config: TrainConfig) -> None:
    """The paths the config names, checked before torch is imported (some 20 s) so that a wrong
    one fails at once: the output folder and the termination log can be written, the base model
    and datasets exist, the benchmarks' questions are valid."""
    output_path(config.output, config.artifact_root, "output")
    check_termination_log(config.termination_log)
    if not resolve_artifact(config.base_model.uri, config.artifact_root).exists():
        raise ConfigError(f"base model {config.base_model.uri} does not exist")
    for dataset in sorted({phase.dataset for phase in config.phases}):
        _check_exists(resolve_artifact(getattr(config.datasets, dataset), config.artifact_root))
    for spec in config.evaluation.benchmarks or []:
        read_benchmark(from_spec(spec), config.artifact_root)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"dataset {path}: {os.strerror(errno.ENOENT)}")  # as reading it would say


def _train(config: TrainConfig) -> int:
    from transformers.utils import logging as transformers_logging

    from labtune.trainer import worker_rank
    from labtune.trainer.preemption import Preempted, StopRequest
    from labtune.trainer.runner import train

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # for pod logs
    stop = StopRequest()
    try:
        with stop.installed():
            summary = train(config, stop)
    except Preempted as preempted:
        log.warning("preempted (%s); started again, the run resumes from its last checkpoint", preempted)
        return EXIT_PREEMPTED
    if worker_rank.local_rank() == 0:
        _write_termination_log(summary, config.termination_log)
    log.info("done: %s", summary.output.model_dump_json(exclude_none=True))
    return 0


def _configure_logging(main_process: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Noise for the reader of a pod's log: progress bars (GGUF dequantizing draws one; tqdm reads
    # this when first imported), bitsandbytes (imported by peft) on CPU kernels that LoRA does not
    # use, peft calling a transformers method deprecated for v6, and peft finding no config.json
    # next to a GGUF base.
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
    warnings.filterwarnings("ignore", "Could not find a config file in", UserWarning)


def _write_termination_log(summary: TrainSummary, path: str) -> None:
    """The summary for the operator; when it would not fit the 4 KiB limit, the per-phase detail
    goes first, then the checkpoint list (both stay in <output>/summary.json)."""
    _write_first_that_fits(
        path,
        summary,
        summary.model_copy(update={"phases": []}),
        summary.model_copy(update={"phases": [], "checkpoints": []}),
    )


def _write_first_that_fits(path: str, *summaries: BaseModel) -> None:
    """The first of the summaries (the whole one, then shorter ones) that fits the termination
    log's 4 KiB limit; a termination log that cannot be written is only a warning."""
    for summary in summaries:
        try:
            write_summary(summary, path)
            return
        except ValueError:
            continue
        except OSError as error:
            log.warning("cannot write the summary to %s: %s", path, error.strerror)
            return
    log.warning("the summary does not fit the termination log %s even shortened", path)


@click.command()
@_config_option("labtune.contract.evaluate.EvaluateConfig")
def evaluate(config_path: Path) -> None:
    """Score models (a base, an adapter over it, a merged model) on evaluation datasets."""
    sys.exit(run_evaluation(config_path))


def run_evaluation(config_path: Path) -> int:
    """Evaluates and returns the process exit code."""
    _configure_logging(True)
    try:
        config = load_config(config_path, EvaluateConfig)
        examples = _check_evaluation_inputs(config)
        check_metrics_port(config.metrics_port)
        return _evaluate(config, examples)
    except ConfigError as error:
        click.echo(f"labtune evaluate: {error}", err=True)
        return EXIT_CONFIG_ERROR
    except JudgeError as error:
        click.echo(f"labtune evaluate: {error}", err=True)
        return EXIT_FAILED


def _check_evaluation_inputs(config: EvaluateConfig) -> dict[str, Examples]:
    """What can be checked before torch is imported, so that a wrong config fails at once: the
    output folder and the termination log can be written, every model's files exist, every
    dataset is valid (each line an EvalExample, or a ChoiceExample for multiple choice; at least
    one). Returns each
    benchmark's examples."""
    output_path(config.output, config.artifact_root, "output")
    check_termination_log(config.termination_log)
    for model in config.models:
        if not resolve_artifact(model.base.uri, config.artifact_root).exists():
            raise ConfigError(f"model {model.name}: base model {model.base.uri} does not exist")
        if model.adapter is not None:
            adapter = resolve_artifact(model.adapter, config.artifact_root)
            if not adapter.exists():
                raise ConfigError(f"model {model.name}: adapter {model.adapter} does not exist")
            if not (adapter / ADAPTER_CONFIG).is_file():
                raise ConfigError(
                    f"model {model.name}: adapter {model.adapter} is not an adapter: "
                    f"expected a folder with {ADAPTER_CONFIG}"
                )
    return {b.name: read_benchmark(b, config.artifact_root) for b in config.benchmarks}


def _evaluate(config: EvaluateConfig, examples: dict[str, Examples]) -> int:
    from transformers.utils import logging as transformers_logging

    from labtune.trainer.evaluation import evaluate, termination_summaries
    from labtune.trainer.preemption import Preempted, StopRequest

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # for pod logs
    stop = StopRequest("SIGTERM: stopping after the current batch (nothing to save), then exiting")
    try:
        with stop.installed():
            summary = evaluate(config, examples, stop)
    except Preempted as preempted:
        log.warning("preempted (%s); started again, the evaluation starts over", preempted)
        return EXIT_PREEMPTED
    _write_first_that_fits(config.termination_log, *termination_summaries(summary))
    log.info("done: %s", summary.results)
    return 0
