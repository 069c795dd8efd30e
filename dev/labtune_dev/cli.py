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


@dev.group()
def node() -> None:
    """A node agent: a Ready Node whose pods run as local processes (a stand-in kubelet)."""


@node.command("serve")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), envvar="KUBECONFIG",
              required=True, help="Cluster to join (default: $KUBECONFIG).")  # fmt: skip
@click.option("--name", default="labtune-dev-node", show_default=True, help="Node name.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Pod folders and claims [default: $LABTUNE_CACHE/run/node/<name>].")  # fmt: skip
@click.option("--gpus", type=int, default=0, show_default=True,
              help="nvidia.com/gpu capacity to advertise (a number only: pods run on the CPU).")  # fmt: skip
@click.option("--pod-cidr", default="10.244.0.0/24", show_default=True, help="Pod addresses.")
@click.option("--bridge", default="labtune0", show_default=True, help="Host bridge of the pods.")
@click.option("--extra-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="PEM CA that containers trust besides the host's.")  # fmt: skip
def node_serve(
    kubeconfig: Path,
    name: str,
    data_root: Path | None,
    gpus: int,
    pod_cidr: str,
    bridge: str,
    extra_ca: Path | None,
) -> None:
    """Run the node agent in the foreground until SIGTERM or Ctrl-C (needs root)."""
    import logging
    import signal
    import threading

    from labtune.devcluster.binaries import cache_root
    from labtune.devcluster.nodeagent import NodeAgent, NodeAgentError, NodeAgentSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = NodeAgentSettings(
        kubeconfig=kubeconfig,
        node_name=name,
        data_root=data_root or cache_root() / "run" / "node" / name,
        gpus=gpus,
        pod_cidr=pod_cidr,
        bridge=bridge,
        extra_ca=extra_ca,
    )
    try:
        agent = NodeAgent(settings)
    except NodeAgentError as error:
        raise click.ClickException(str(error)) from error
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    agent.start()
    stopped.wait()
    agent.stop()


@dev.group()
def demo() -> None:
    """The demo's environment: node agent, git server, teacher, artifact claim and operator."""


def _demo_state_dir() -> Path:
    from labtune.devcluster.binaries import cache_root

    return cache_root() / "run" / "demo"


@demo.command("up")
@click.option(
    "--examples",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("examples/demo"),
    show_default=True,
    help="The demo's taxonomy sources.",
)
@click.option("--gpus", type=int, default=0, show_default=True, help="nvidia.com/gpu the Node advertises.")
def demo_up(examples: Path, gpus: int) -> None:
    """Start the demo environment in the background against the running control plane."""
    from labtune.devcluster import controlplane as cp
    from labtune.devcluster import demo as environment

    plane = cp.running(cp.default_state_dir())
    if plane is None:
        raise click.ClickException(
            "no control plane is running; start one with `labtune dev controlplane up`"
        )
    settings = environment.DemoSettings(
        kubeconfig=plane.kubeconfig, state_dir=_demo_state_dir(), examples=examples.absolute(), gpus=gpus
    )
    try:
        state = environment.up(settings)
    except RuntimeError as error:
        raise click.ClickException(str(error)) from error
    click.echo(state.model_dump_json(indent=2))


@demo.command("down")
def demo_down() -> None:
    """Stop the demo environment (its pods, the node, the operator, the servers)."""
    from labtune.devcluster import demo as environment

    stopped = environment.down(_demo_state_dir())
    click.echo("labtune demo: " + ("stopped" if stopped else "no demo environment was running"), err=True)


@demo.command("serve", hidden=True)
@click.option("--settings", "settings_json", required=True)
def demo_serve(settings_json: str) -> None:
    """Run the demo environment in the foreground (what `up` starts detached)."""
    import logging

    from labtune.devcluster import demo as environment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    environment.serve(environment.DemoSettings.model_validate_json(settings_json))


if __name__ == "__main__":
    dev()
