"""The generator's commands: `labtune taxonomy validate|diff|sync` and `labtune generate`.
Heavy libraries are imported inside the commands so `labtune --help` stays fast."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from labtune.contract import EXIT_CONFIG_ERROR, EXIT_FAILED, ConfigError, load_config, write_summary
from labtune.contract.common import ContractModel, check_termination_log
from labtune.contract.generate import GenerateConfig
from labtune.contract.taxonomy_sync import TaxonomySyncConfig

if TYPE_CHECKING:
    from labtune.generator.validation import ValidationReport

_root_option = click.argument(
    "root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=".", required=False
)
_base_option = click.option(
    "--base",
    default="empty",
    show_default=True,
    help="Validate only the leaves changed since the merge base with this ref (`empty`: every leaf).",
)
# No existence or type checks by click (a usage error, exit 2, three lines): load_config reports
# a missing or unreadable file, or a folder, as the one line of any bad config, exit 78.
_config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The pod config file (YAML or JSON).",
)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _pod_errors(*failures: type[Exception]) -> Iterator[None]:
    """Bad config or input exits EXIT_CONFIG_ERROR, the given failures EXIT_FAILED, each with one line."""
    try:
        yield
    except ConfigError as error:
        _fail(str(error), EXIT_CONFIG_ERROR)
    except failures as error:
        _fail(str(error), EXIT_FAILED)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)


@click.group()
def taxonomy() -> None:
    """Validate, diff and sync LAB taxonomies (trees of qna.yaml files)."""


@taxonomy.command()
@_root_option
@_base_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="`github` prints workflow annotations for a taxonomy repository's CI.",
)
def validate(root: Path, base: str, output_format: str) -> None:
    """Validate the qna.yaml files of the taxonomy at ROOT as InstructLab does (schema by the
    file's `version`, yamllint); exit 1 when there is any error."""
    from labtune.generator.gitrepo import GitError
    from labtune.generator.taxonomy_scan import scan

    try:
        report = scan(root, base=base, validate="changed").report
    except GitError as error:
        _fail(str(error), EXIT_FAILED)
    printers: dict[str, Callable[[], None]] = {
        "json": lambda: click.echo(
            json.dumps(
                {
                    "root": str(root),
                    "files": [f.model_dump(mode="json") for f in report.files],
                    "errors": report.error_count,
                    "warnings": report.warning_count,
                },
                indent=1,
            )
        ),
        "github": lambda: _print_github(root, report),
        "text": lambda: _print_text(report),
    }
    printers[output_format]()
    if report.error_count:
        sys.exit(EXIT_FAILED)


def _print_text(report: ValidationReport) -> None:
    for file in report.files:
        for kind, issues in (("error", file.errors), ("warning", file.warnings)):
            for issue in issues:
                click.echo(f"{file.path}:{issue.line}:{issue.column}: {kind}: {issue.message}")
    counts = f"{report.error_count} error(s), {report.warning_count} warning(s)"
    click.echo(f"{len(report.files)} file(s) checked: {counts}", err=True)


def _print_github(root: Path, report: ValidationReport) -> None:
    for file in report.files:
        where = os.path.relpath(root / file.path)
        for kind, issues in (("error", file.errors), ("warning", file.warnings)):
            for issue in issues:
                click.echo(f"::{kind} file={where},line={issue.line},col={issue.column}::{issue.message}")


@taxonomy.command()
@_root_option
@click.option("--base", default="origin/main", show_default=True, help="Ref to diff against (`empty`: all).")
def diff(root: Path, base: str) -> None:
    """List the leaves of the taxonomy at ROOT added or modified since the merge base with
    BASE, untracked files included (`ilab taxonomy diff`)."""
    from labtune.generator.gitrepo import GitError
    from labtune.generator.taxonomy_scan import scan

    try:
        result = scan(root, base=base, validate="changed")
    except GitError as error:
        _fail(str(error), EXIT_FAILED)
    for path in result.changed:
        click.echo(path)


@taxonomy.command()
@_config_option
def sync(config_path: Path) -> None:
    """The Taxonomy resource's pod: clone, pin, validate, write the leaf manifest and summary."""
    from labtune.generator.gitrepo import GitError
    from labtune.generator.sync import sync as run_sync

    _logging()
    with _pod_errors(GitError):
        config = load_config(config_path, TaxonomySyncConfig)
        check_termination_log(config.termination_log)
        summary = run_sync(config)
        click.echo(write_summary(summary, config.termination_log))


@click.command()
@_config_option
@click.option(
    "--shard",
    "shard",
    type=click.IntRange(min=0),
    default=None,
    metavar="INDEX",
    help="Generate only shard INDEX of a run split in `shards` (its leaves, into the checkpoints).",
)
@click.option("--mix", is_flag=True, help="Mix the finished shards of a split run into the datasets.")
@click.option(
    "--plan", is_flag=True, help="Print how the leaves split across `shards` (JSON) and generate nothing."
)
def generate(config_path: Path, shard: int | None, mix: bool, plan: bool) -> None:
    """The SyntheticDataRun's pod: generate the phase datasets from a taxonomy with a teacher."""
    from labtune.generator import run
    from labtune.generator.generator_metrics import GeneratorMetrics
    from labtune.generator.gitrepo import GitError
    from labtune.generator.teacher import TeacherError

    if (shard is not None) + mix + plan > 1:
        raise click.UsageError("--shard, --mix and --plan are different steps: give one of them")
    _logging()
    with _pod_errors(GitError, TeacherError, run.GenerationError):
        config = load_config(config_path, GenerateConfig)
        if plan:
            click.echo(run.plan_shards(config).model_dump_json(indent=1))
            return
        check_termination_log(config.termination_log)
        if (shard is not None or mix) and config.shards == 1:
            raise ConfigError("the run is not split in shards (shards: 1): run it without --shard or --mix")
        metrics = GeneratorMetrics()
        metrics.serve(config.metrics_port)  # at once: a port in use fails before any work
        if mix:
            summary: ContractModel = run.mix_shards(config)
        elif shard is not None:
            summary = run.generate_shard(config, shard, metrics=metrics)
        else:
            summary = run.generate(config, metrics=metrics)
        click.echo(write_summary(summary, config.termination_log))
