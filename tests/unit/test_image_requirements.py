"""images/requirements/*.txt are compiled from what pyproject.toml (and the trainer's base) say now,
and the torch they pin is the one the torch base carries."""

from __future__ import annotations

import copy
import tomllib

from labtune_dev.image_requirements import (
    LOCKS_BY_NAME,
    ROOT,
    TRAINER_DOCKERFILE,
    Lock,
    direct_requirements,
    inputs_digest,
    pins,
    recorded_digest,
    stale_locks,
    torch_base_version,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_requirement_files_are_compiled_from_pyproject() -> None:
    assert not stale_locks(), "they drifted from pyproject.toml: run `labtune-dev images lock`"


def test_a_new_dependency_of_an_extra_is_drift() -> None:
    lock = LOCKS_BY_NAME["operator"]
    changed = copy.deepcopy(PYPROJECT)
    changed["project"]["optional-dependencies"]["operator"].append("rich>=13")
    requirements = direct_requirements(lock, changed, TRAINER_DOCKERFILE.read_text())
    assert inputs_digest(requirements, None) != recorded_digest(lock.path.read_text())


def test_torch_is_the_version_of_the_trainers_public_base() -> None:
    torch = pins(LOCKS_BY_NAME["torch"].path.read_text())
    assert torch["torch"] == torch_base_version(TRAINER_DOCKERFILE.read_text())


def test_generator_and_trainer_pin_what_the_torch_base_has() -> None:
    # The torch base satisfies these pins, so the images' pip installs none of the GBs again.
    torch = pins(LOCKS_BY_NAME["torch"].path.read_text())
    for name in ("generator", "trainer"):
        image = pins(LOCKS_BY_NAME[name].path.read_text())
        assert {key: image.get(key) for key in torch} == torch, name


def test_build_requirements_come_from_the_build_system() -> None:
    requirements = direct_requirements(Lock("build"), PYPROJECT, "")
    assert requirements == PYPROJECT["build-system"]["requires"]
    assert set(pins(LOCKS_BY_NAME["build"].path.read_text())) >= {"setuptools", "wheel"}


def test_inputs_digest_ignores_order_and_sees_constraints() -> None:
    assert inputs_digest(["a>=1", "b"], None) == inputs_digest(["b", "a>=1"], None)
    assert inputs_digest(["a>=1"], None) != inputs_digest(["a>=2"], None)
    assert inputs_digest(["a"], "torch==2.9.1\n") != inputs_digest(["a"], "torch==2.9.0\n")
    # Comments and annotations of the constraints file are not inputs.
    assert inputs_digest(["a"], "# x\ntorch==2.9.1\n    # via y\n") == inputs_digest(["a"], "torch==2.9.1\n")


def test_pins_are_normalized() -> None:
    text = "# header\nPyYAML==6.0.2\n    # via labtune\ntyping_extensions==4.12.2 ; python_version < '3.12'\n"
    assert pins(text) == {"pyyaml": "6.0.2", "typing-extensions": "4.12.2"}


def test_torch_base_version_is_read_from_the_base_tag() -> None:
    dockerfile = "ARG BASE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime\nFROM ${BASE}\n"
    assert torch_base_version(dockerfile) == "2.9.1"
