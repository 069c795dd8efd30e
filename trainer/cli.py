"""`labtune train --config FILE`: the TuningJob pod's entry point, also run by hand.

Exit codes (labtune.contract): 0 done; EXIT_CONFIG_ERROR bad config or data (one line on
stderr); EXIT_PREEMPTED stopped by SIGTERM after saving a checkpoint; anything else a failure.
torch and transformers are imported inside the command so that `labtune --help` stays fast."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import click

from labtune.contract import (
    EXIT_CONFIG_ERROR,
    EXIT_PREEMPTED,
    ConfigError,
    load_config,
    write_summary,
)
from labtune.contract.train import TrainConfig, TrainSummary

log = logging.getLogger("labtune.trainer")


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The trainer config (YAML or JSON, labtune.contract.train.TrainConfig).",
)
def train(config_path: Path) -> None:
    """Tune a base model in phases (LoRA, QLoRA or full) as the config says."""
    sys.exit(run(config_path))


def run(config_path: Path) -> int:
    """Runs the trainer and returns the process exit code."""
    from labtune.trainer import processes

    _configure_logging(processes.rank() == 0)  # before the imports below log anything

    from labtune.trainer.launcher import launch, needs_launch, record_exit
    from labtune.trainer.preemption import Preempted, StopRequest
    from labtune.trainer.runner import train as train_run

    stop = StopRequest()
    try:
        config = load_config(config_path, TrainConfig)
        if needs_launch(config):
            return launch(config, config_path)
        with stop.installed():
            summary = train_run(config, stop)
    except ConfigError as error:
        click.echo(f"labtune train: {error}", err=True)
        code = EXIT_CONFIG_ERROR
    except Preempted as preempted:
        log.warning("preempted (%s); started again, the run resumes from its last checkpoint", preempted)
        code = EXIT_PREEMPTED
    else:
        if processes.local_rank() == 0:
            _write_termination_log(summary, config.termination_log)
        log.info("done: %s", summary.output.model_dump_json(exclude_none=True))
        code = 0
    record_exit(code)
    return code


def _configure_logging(main_process: bool) -> None:
    from transformers.utils import logging as transformers_logging

    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    transformers_logging.set_verbosity_warning()  # type: ignore[no-untyped-call]
    # Noise for the reader of a pod's log: bitsandbytes (imported by peft) on CPU kernels that LoRA
    # does not use, and peft calling a transformers method deprecated for v6.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings(
        "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _write_termination_log(summary: TrainSummary, path: str) -> None:
    """The summary for the operator; when it would not fit the 4 KiB limit, the per-phase detail
    goes first, then the checkpoint list (both stay in <output>/summary.json)."""
    for trimmed in (
        summary,
        summary.model_copy(update={"phases": []}),
        summary.model_copy(update={"phases": [], "checkpoints": []}),
    ):
        try:
            write_summary(trimmed, path)
            return
        except ValueError:
            continue
        except OSError as error:
            log.warning("cannot write the summary to %s: %s", path, error.strerror)
            return
