"""The three images build offline with buildah (labtune_dev.images) and work: each entry point
answers, as the job UID; the operator image holds neither dev tooling nor ML libraries; the job images
use the torch of their shared base. Minutes once (bases, torch); seconds on a warm cache."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ocitest import layout_index

from labtune.operator.children.pod_template import JOB_UID
from labtune_dev.images import IMAGE_NAMES, BuiltImage, build_image, buildah, save_image

# A cold cache builds the bases and fetches torch (GBs) first.
pytestmark = [
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot isolation and own storage need root"),
]
OPERATOR_MAX_BYTES = 300_000_000
# Neither the dev cluster's distribution nor test or lint tools, and no ML library.
NOT_IN_OPERATOR = ("labtune_dev", "pytest", "mypy", "ruff", "uv", "torch", "transformers", "peft", "trl")
NOT_IN_OPERATOR += ("accelerate", "datasets", "numpy")


@pytest.fixture(scope="module")
def built() -> dict[str, BuiltImage]:
    return {name: build_image(name) for name in IMAGE_NAMES}


@pytest.fixture(scope="module")
def containers(built: dict[str, BuiltImage]) -> Iterator[dict[str, str]]:
    """A working container of each image (cheap on overlay storage)."""
    b = buildah()
    made = {}
    try:
        for name, image in built.items():
            argv = b.argv("from", "--pull=never", image.image_id)
            made[name] = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        yield made
    finally:
        for container in made.values():
            subprocess.run(b.argv("rm", container), capture_output=True, check=False)


def _run(container: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Runs argv in the container as the image's user."""
    command = buildah().argv("run", "--isolation", "chroot", container, "--", *argv)
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)


def _config(image: BuiltImage) -> dict[str, object]:
    # buildah 1.28's --format templates have no `json`.
    argv = buildah().argv("inspect", "--type", "image", image.image_id)
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    config: dict[str, object] = json.loads(result.stdout)["OCIv1"]["config"]
    return config


def test_tags_and_oci_archive(built: dict[str, BuiltImage], tmp_path: Path) -> None:
    """The images read from buildah's storage are exact: every layer put back together from its
    tar-split matches its digest (write_layout checks), and `save` writes an archive naming the tag."""
    for name, image in built.items():
        assert image.tag == f"ghcr.io/labtune/{name}:0.1.0"
    archive = tmp_path / "operator.oci.tar"
    save_image(built["operator"], archive)
    with archive.open("rb") as layout:
        assert layout_index(layout) == (built["operator"].tag, built["operator"].oci.manifest_digest)
    for name in ("generator", "trainer"):  # all but their GB layers (the base, torch, dependencies)
        oci = built[name].oci
        big = {layer.digest for layer in oci.layers if layer.size > 100_000_000}
        assert oci.write_layout(io.BytesIO(), skip=big) == oci.size - sum(
            layer.size for layer in oci.layers if layer.digest in big
        )


def test_operator_image_is_small_and_has_no_dev_tooling_nor_ml(
    built: dict[str, BuiltImage], containers: dict[str, str]
) -> None:
    assert built["operator"].size <= OPERATOR_MAX_BYTES, f"{built['operator'].size / 1e6:.0f} MB"
    probe = f"import importlib.util as u; print([m for m in {NOT_IN_OPERATOR!r} if u.find_spec(m)])"
    result = _run(containers["operator"], "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_runs_as_the_job_uid(name: str, built: dict[str, BuiltImage], containers: dict[str, str]) -> None:
    assert _config(built[name])["User"] == f"{JOB_UID}:{JOB_UID}"
    assert _run(containers[name], "id", "-u").stdout.strip() == str(JOB_UID)


# The entry point, and the commands the operator runs in the image (tests/unit/test_dockerfiles.py).
HELP = [
    ("operator", ()),
    ("generator", ()),
    ("generator", ("taxonomy", "sync")),
    ("generator", ("generate",)),
    ("trainer", ()),
    ("trainer", ("train",)),
]


@pytest.mark.parametrize(("name", "command"), HELP, ids=[" ".join((n, *c)) for n, c in HELP])
def test_entrypoint_answers_help(
    name: str, command: tuple[str, ...], built: dict[str, BuiltImage], containers: dict[str, str]
) -> None:
    entrypoint = _config(built[name])["Entrypoint"]
    assert isinstance(entrypoint, list)
    result = _run(containers[name], *entrypoint, *command, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("name", ["generator", "trainer"])
def test_job_images_use_the_torch_of_their_base(name: str, containers: dict[str, str]) -> None:
    modules = "torch, transformers" + (", peft, trl, accelerate, datasets" if name == "trainer" else "")
    probe = f"import {modules}; print(torch.__file__)"
    result = _run(containers[name], "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("/usr/local/lib/python3.11/dist-packages/torch/")


def test_generator_image_has_git_and_ssh(containers: dict[str, str]) -> None:
    for argv in (("git", "--version"), ("ssh", "-V")):
        result = _run(containers["generator"], *argv)
        assert result.returncode == 0, result.stderr
