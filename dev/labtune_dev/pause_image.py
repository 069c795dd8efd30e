"""The pod sandbox ("pause") image, made here: no registry is reachable, and containerd needs one
before it can start any pod. A static build of data/pause.c (cached by the source's digest) in a
one-layer image, under the name containerd's config pins."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from labtune_dev.binaries import BinariesError, cache_root
from labtune_dev.oci import OciImage, image_from_files

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def pause_image() -> OciImage:
    """The pause image (its binary compiled once per source version)."""
    source = resources.files("labtune_dev").joinpath("data/pause.c").read_bytes()
    binary = cache_root() / "images" / f"pause-{hashlib.sha256(source).hexdigest()[:12]}"
    if not binary.is_file():
        binary.parent.mkdir(parents=True, exist_ok=True)
        _compile(source, binary)
    return image_from_files(PAUSE_IMAGE, {"pause": binary.read_bytes()}, ["/pause"], user="65535:65535")


def _compile(source: bytes, binary: Path) -> None:
    if shutil.which("gcc") is None:
        raise BinariesError("building the pause image needs gcc (Debian: build-essential)")
    src, partial = binary.with_name(binary.name + ".c"), binary.with_name(binary.name + ".partial")
    src.write_bytes(source)
    result = subprocess.run(
        ["gcc", "-Os", "-static", "-s", "-o", str(partial), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    src.unlink()
    if result.returncode != 0:
        raise BinariesError(
            f"gcc could not build the pause binary (static glibc: libc6-dev):\n{result.stderr}"
        )
    partial.replace(binary)
