"""`labtune dev`: local development helpers (a real control plane on this machine)."""

from __future__ import annotations

from pathlib import Path

import click

from labtune.devcluster.binaries import BinariesError, ensure_binaries

# The commands import labtune.devcluster.controlplane themselves: it takes half a second.


@click.group()
def dev() -> None:
    """Local development: a real Kubernetes control plane on this machine."""


@dev.group()
def controlplane() -> None:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes."""


@controlplane.command()
def build() -> None:
    """Build the binaries (once; or find them in KUBEBUILDER_ASSETS) and print their folder."""
    try:
        click.echo(ensure_binaries())
    except BinariesError as error:
        raise click.ClickException(str(error)) from error


@dev.command()
def tools() -> None:
    """Build helm, prometheus and promtool and fetch the prometheus-operator CRDs (once; what the
    chart and alert tests use) and print where they are."""
    from labtune.devcluster.tools import ensure_tools

    try:
        found = ensure_tools()
    except BinariesError as error:
        raise click.ClickException(str(error)) from error
    for name, path in vars(found).items():
        click.echo(f"{name}: {path}")


@controlplane.command()
@click.option(
    "--with-controllers/--no-controllers",
    default=True,
    show_default=True,
    help="Also run kube-controller-manager and kube-scheduler.",
)
def up(with_controllers: bool) -> None:
    """Start a control plane in the background (if none runs) and print its KUBECONFIG.

    Use it as: eval "$(labtune dev controlplane up)"
    """
    from labtune.devcluster import controlplane as cp

    try:
        state, started = cp.up(cp.default_state_dir(), with_controllers=with_controllers)
    except (BinariesError, cp.ControlPlaneError) as error:
        raise click.ClickException(str(error)) from error
    if not started:
        click.echo("labtune devcluster: a control plane is already running", err=True)
    controllers = "with" if state.controllers else "without"
    click.echo(f"# kube-apiserver {state.server} ({controllers} controllers), logs in {state.directory}/logs")
    click.echo(f"# kubeconfig: {state.kubeconfig}")
    click.echo(cp.export_line(state))


@controlplane.command()
def env() -> None:
    """Print `export KUBECONFIG=...` for the running control plane."""
    from labtune.devcluster import controlplane as cp

    state = cp.running(cp.default_state_dir())
    if state is None:
        raise click.ClickException(
            "no control plane is running; start one with `labtune dev controlplane up`"
        )
    click.echo(cp.export_line(state))


@controlplane.command()
def down() -> None:
    """Stop the background control plane and remove its files."""
    from labtune.devcluster import controlplane as cp

    stopped = cp.down(cp.default_state_dir())
    click.echo("labtune devcluster: " + ("stopped" if stopped else "no control plane was running"), err=True)


@controlplane.command(hidden=True)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--binaries", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--with-controllers/--no-controllers", required=True)
def serve(state_dir: Path, binaries: Path, with_controllers: bool) -> None:
    """Run a control plane in the foreground until signalled (what `up` starts detached)."""
    from labtune.devcluster import controlplane as cp

    try:
        cp.serve(state_dir, binaries, with_controllers=with_controllers)
    except cp.ControlPlaneError as error:  # `up` shows this log's tail: the message, no traceback
        raise click.ClickException(str(error)) from error


if __name__ == "__main__":
    dev()
