"""Image rebuild after a Python source change, to the image in the node's containerd, against
buildah's own export: the trainer image by default (8 GB: a CUDA torch base and the dependencies,
under 1 MB of labtune's source).

On a control plane and node of its own (labtune_dev), each round writes a new module into labtune/
(a source change; removed at the end), rebuilds the image (`labtune_dev.images.build_image`:
buildah bud, layers cached) and loads that one build both ways, in alternating order:

- labtune: the image read from buildah's storage and streamed into `ctr images import -`, without
  the layers containerd has (labtune_dev.oci, labtune_dev.buildah_storage), as `make demo` does;
- baseline: `buildah push` to an OCI archive with level-0 gzip (the fastest archive buildah 1.28
  writes: it compresses even with --disable-compression), then `ctr images import` of the archive,
  under a tag of its own, so that neither route's blobs are collected while the other runs.

Prints, per round, the build and both loads; then the medians, the rebuild (build + load) of each
route and their ratio. A warm-up loads the image once first (nothing timed: on a fresh containerd
that is the one full transfer). Target: labtune's rebuild <= 90 s.

    python benchmarks/image_rebuild.py [--image trainer] [--rounds 3]

Needs root (buildah, the node) and the images' caches (the first run builds the bases: minutes).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from labtune_dev.controlplane import ControlPlane
from labtune_dev.images import BuiltImage, build_image, buildah, image_name
from labtune_dev.node import Node, NodeSettings, ctr_argv, ensure_bridge, load_image, remove_bridge

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "labtune" / "_rebuild_probe.py"
SETTINGS = NodeSettings(name="labtune-bench-node", bridge="labtuneb0", pod_cidr="10.246.0.0/24")
T = TypeVar("T")


def timed(step: str, action: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    result = action()
    seconds = time.monotonic() - started
    print(f"  {step}: {seconds:.1f}s", flush=True)
    return result, seconds


def baseline_tag(image: BuiltImage) -> str:
    return image.tag.rsplit(":", 1)[0] + ":baseline"


def baseline_load(node: Node, image: BuiltImage, work: Path) -> None:
    """buildah's export to an archive, then `ctr images import` of it."""
    archive = work / "baseline.oci.tar"
    push = ["push", "--quiet", "--compression-format", "gzip", "--compression-level", "0"]
    target = f"oci-archive:{archive}:{baseline_tag(image)}"
    buildah().run("buildah push (baseline)", *push, image.image_id, target, log="bench")
    try:
        command = ctr_argv(node.directory, "images", "import", "--snapshotter", "overlayfs", str(archive))
        subprocess.run(command, capture_output=True, check=True)
    finally:
        archive.unlink()


def labtune_load(node: Node, image: BuiltImage, work: Path) -> None:
    load_image(node.directory, image.oci)


ROUTES: dict[str, tuple[str, Callable[[Node, BuiltImage, Path], None]]] = {
    "labtune": ("load (labtune)", labtune_load),
    "baseline": ("export + import (baseline)", baseline_load),
}


def change_source(round_number: int) -> None:
    PROBE.write_text(f'"""A source change of benchmarks/image_rebuild.py."""\n\nROUND = "{uuid.uuid4()}"\n')
    print(f"round {round_number}: {PROBE.relative_to(ROOT)} changed", flush=True)


def rounds(node: Node, name: str, count: int, work: Path) -> tuple[list[float], dict[str, list[float]]]:
    """Per round: the build's seconds, and each route's load seconds."""
    builds: list[float] = []
    loads: dict[str, list[float]] = {"labtune": [], "baseline": []}
    print("warm-up: build and load once", flush=True)
    image, _ = timed("build (warm-up)", lambda: build_image(name))
    timed("load (labtune, warm-up)", lambda: load_image(node.directory, image.oci))
    for round_number in range(1, count + 1):
        change_source(round_number)
        image, seconds = timed("build", lambda: build_image(name))
        builds.append(seconds)
        for route in ["labtune", "baseline"] if round_number % 2 else ["baseline", "labtune"]:
            step, load = ROUTES[route]
            _, seconds = timed(step, functools.partial(load, node, image, work))
            loads[route].append(seconds)
        node.remove_image(baseline_tag(image))
    return builds, loads


def report(name: str, builds: list[float], loads: dict[str, list[float]]) -> None:
    build = statistics.median(builds)
    ours, theirs = (statistics.median(loads[route]) for route in ("labtune", "baseline"))
    ratios = [(b + o) / (b + t) for b, o, t in zip(builds, loads["labtune"], loads["baseline"], strict=True)]
    print(f"\n{name} image, {len(builds)} rounds, medians:")
    print(f"  build (buildah bud, cached layers): {build:.1f}s")
    print(f"  load, labtune (streamed, new layers only): {ours:.1f}s")
    print(f"  load, baseline (buildah push + ctr import): {theirs:.1f}s")
    print(f"  rebuild, labtune: {build + ours:.1f}s (target <= 90s); baseline: {build + theirs:.1f}s")
    per_round = " ".join(f"{ratio:.2f}" for ratio in ratios)
    print(f"  rebuild ratio labtune/baseline: {statistics.median(ratios):.2f} (per round: {per_round})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default="trainer", help="operator, generator or trainer")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = image_name(args.image)
    ensure_bridge(SETTINGS)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="labtune-bench-") as work,
            ControlPlane(address=SETTINGS.address) as plane,
        ):
            plane.start_controllers()
            with Node(SETTINGS, plane.server, plane.pki, plane.kubeconfig) as node:
                builds, loads = rounds(node, name, args.rounds, Path(work))
    finally:
        PROBE.unlink(missing_ok=True)
        remove_bridge(SETTINGS)
    report(name, builds, loads)


if __name__ == "__main__":
    main()
