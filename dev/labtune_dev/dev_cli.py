"""`labtune-dev`: development helpers (a real Kubernetes cluster, the images and the demo, locally)."""

from __future__ import annotations

from pathlib import Path

import click

from labtune_dev.binaries import BinariesError, ensure_binaries

# The commands import labtune_dev.controlplane themselves: it takes half a second.


@click.group()
def dev() -> None:
    """Local development: a real Kubernetes cluster on this machine (control plane, node, images)."""


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
    from labtune_dev.tools import ensure_tools

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
@click.option(
    "--node/--no-node",
    default=False,
    show_default=True,
    help="Also run a real node (containerd, kubelet, kube-proxy, CoreDNS; root); the apiserver listens on "
    "its address.",
)
@click.option("--gpus", type=int, default=0, show_default=True,
              help="nvidia.com/gpu the node advertises (pods that ask for them run on the CPU).")  # fmt: skip
def up(with_controllers: bool, node: bool, gpus: int) -> None:
    """Start a control plane (and a node) in the background, if none runs, and print its KUBECONFIG.

    Use it as: eval "$(labtune-dev controlplane up)"
    """
    from labtune_dev import controlplane as cp

    settings = None
    if node:
        from labtune_dev.node import NodeSettings

        settings = NodeSettings(gpus=gpus)
    try:
        state, started = cp.up(cp.default_state_dir(), with_controllers=with_controllers, node=settings)
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
    from labtune_dev import controlplane as cp

    state = cp.running(cp.default_state_dir())
    if state is None:
        raise click.ClickException(
            "no control plane is running; start one with `labtune-dev controlplane up`"
        )
    click.echo(cp.export_line(state))


@controlplane.command()
def down() -> None:
    """Stop the background control plane and remove its files."""
    from labtune_dev import controlplane as cp

    stopped = cp.down(cp.default_state_dir())
    click.echo("labtune devcluster: " + ("stopped" if stopped else "no control plane was running"), err=True)


@controlplane.command(hidden=True)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--binaries", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--with-controllers/--no-controllers", required=True)
@click.option("--node", "node_json", default=None, help="NodeSettings as JSON: also run a node.")
def serve(state_dir: Path, binaries: Path, with_controllers: bool, node_json: str | None) -> None:
    """Run a control plane in the foreground until signalled (what `up` starts detached)."""
    from labtune_dev import controlplane as cp
    from labtune_dev.node import NodeError, NodeSettings

    node = NodeSettings.model_validate_json(node_json) if node_json is not None else None
    try:
        cp.serve(state_dir, binaries, with_controllers=with_controllers, node=node)
    except (
        cp.ControlPlaneError,
        BinariesError,
        NodeError,
    ) as error:  # `up` shows this log's tail: no traceback
        raise click.ClickException(str(error)) from error


@dev.group()
def demo() -> None:
    """The demo's environment: git server, teacher, artifact claim, images and the operator (Helm)."""


def _demo_state_dir() -> Path:
    from labtune_dev.binaries import cache_root

    return cache_root() / "run" / "demo"


@demo.command("up")
@click.option(
    "--examples",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("examples/demo"),
    show_default=True,
    help="The demo's taxonomy sources.",
)
def demo_up(examples: Path) -> None:
    """Start the demo environment in the background on the running cluster (it needs its node)."""
    from labtune_dev import controlplane as cp
    from labtune_dev import demo as environment

    plane = cp.running(cp.default_state_dir())
    if plane is None or plane.node_directory is None or plane.node_address is None:
        raise click.ClickException(
            "no cluster with a node is running; start one with `labtune-dev controlplane up --node`"
        )
    settings = environment.DemoSettings(
        kubeconfig=plane.kubeconfig,
        node_dir=plane.node_directory,
        node_address=plane.node_address,
        state_dir=_demo_state_dir(),
        examples=examples.absolute(),
    )
    try:
        state = environment.up(settings)
    except RuntimeError as error:
        raise click.ClickException(str(error)) from error
    click.echo(state.model_dump_json(indent=2))


@demo.command("down")
def demo_down() -> None:
    """Stop the demo environment (the operator's release, the servers)."""
    from labtune_dev import demo as environment

    stopped = environment.down(_demo_state_dir())
    click.echo("labtune demo: " + ("stopped" if stopped else "no demo environment was running"), err=True)


@demo.command("serve", hidden=True)
@click.option("--settings", "settings_json", required=True)
def demo_serve(settings_json: str) -> None:
    """Run the demo environment in the foreground (what `up` starts detached)."""
    import logging

    from labtune_dev import demo as environment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    environment.serve(environment.DemoSettings.model_validate_json(settings_json))


@dev.group()
def images() -> None:
    """The operator, generator and trainer images, built with buildah without network inside the builds."""


@images.command("build")
@click.argument("names", nargs=-1, metavar="[NAME]...")
def images_build(names: tuple[str, ...]) -> None:
    """Build the images (operator, generator, trainer; all by default) and print one line per image:
    tag, size, image id."""
    from labtune_dev import images as builder

    try:
        wanted = [builder.image_name(name) for name in names] or list(builder.IMAGE_NAMES)
        for name in wanted:
            built = builder.build_image(name)
            click.echo(f"{built.tag}\t{built.size / 1e6:.0f} MB\t{built.image_id}")
    except builder.ImageError as error:
        raise click.ClickException(str(error)) from error


@images.command("save")
@click.argument("name")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
def images_save(name: str, archive: Path) -> None:
    """Build the image NAME (cached layers) and write it to ARCHIVE as an OCI archive, for
    `ctr -n k8s.io images import ARCHIVE` on another node."""
    from labtune_dev import images as builder

    try:
        builder.save_image(builder.build_image(builder.image_name(name)), archive)
    except builder.ImageError as error:
        raise click.ClickException(str(error)) from error
    click.echo(archive)


@images.command("lock")
def images_lock() -> None:
    """Recompile images/requirements/*.txt from pyproject.toml (PyPI) and print their paths."""
    from labtune_dev import image_requirements
    from labtune_dev import images as builder

    try:
        paths = image_requirements.compile_locks(builder.uv())
    except (image_requirements.RequirementsError, builder.ImageError) as error:
        raise click.ClickException(str(error)) from error
    for path in paths:
        click.echo(path)


if __name__ == "__main__":
    dev()
