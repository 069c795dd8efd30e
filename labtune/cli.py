"""The `labtune` command line."""

from __future__ import annotations

from pathlib import Path

import click

from labtune import __version__
from labtune.operator.operator_cli import operator

CRD_FOLDERS = ("crds", "charts/labtune/crds")


@click.group()
@click.version_option(__version__, prog_name="labtune")
def main() -> None:
    """labtune: the LAB method on Kubernetes."""


@main.group()
def crds() -> None:
    """CustomResourceDefinitions generated from the API models."""


_dirs_option = click.option(
    "--dir",
    "dirs",
    multiple=True,
    default=CRD_FOLDERS,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the CRD files (repeatable).",
)


@crds.command("generate")
@_dirs_option
def crds_generate(dirs: tuple[Path, ...]) -> None:
    """Write the CRDs from the models."""
    from labtune.api import KINDS
    from labtune.api.crd import write

    for path in write(KINDS, dirs):
        click.echo(f"wrote {path}")


@crds.command("check")
@_dirs_option
def crds_check(dirs: tuple[Path, ...]) -> None:
    """Fail when the CRD files differ from what the models generate."""
    from labtune.api import KINDS
    from labtune.api.crd import CrdDrift, check

    try:
        check(KINDS, dirs)
    except CrdDrift as drift:
        raise click.ClickException(str(drift)) from drift
    click.echo(f"CRDs in {', '.join(map(str, dirs))} match the models")


main.add_command(operator)

from labtune.generator.generator_cli import generate, taxonomy  # noqa: E402  (registered after the core commands)

main.add_command(taxonomy)
main.add_command(generate)

from labtune.trainer.trainer_cli import evaluate, train  # noqa: E402  (imports torch only when a command runs)

main.add_command(train)
main.add_command(evaluate)
