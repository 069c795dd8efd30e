"""The images' pinned requirement files (images/requirements/*.txt), compiled from pyproject.toml.

Each image installs its dependencies from its own file in a layer of their own, before the labtune
source: a source change rebuilds only the source layer. `labtune-dev images lock` (re)compiles the
files with `uv pip compile`; each starts with a digest of what it was compiled from, so that a test
fails when pyproject.toml (or the trainer's base) moves on without them.

- torch.txt: the torch of the trainer's public base (its tag names the version), with what it needs;
  the local torch base installs exactly this, and the generator and trainer files are compiled under
  it as constraints, so their torch pins are satisfied by the base and its big layer is shared.
- build.txt: pyproject.toml's build requirements, which pip's isolated build of the labtune source
  needs from the wheelhouse when it has no index.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS_DIR = ROOT / "images" / "requirements"
TRAINER_DOCKERFILE = ROOT / "images" / "trainer" / "Dockerfile"
# Every base (Debian bookworm, python:3.11-slim, the PyTorch image) runs CPython 3.11 on x86_64 glibc.
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_28"
LOCK_COMMAND = "labtune-dev images lock"

_DIGEST_RE = re.compile(r"^# labtune-inputs: (?P<digest>[0-9a-f]{64})$", re.MULTILINE)
_PIN_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)", re.MULTILINE)
_TORCH_BASE_RE = re.compile(r"^ARG BASE=pytorch/pytorch:(?P<version>\d+\.\d+\.\d+)-", re.MULTILINE)


class RequirementsError(RuntimeError):
    """A requirement file cannot be compiled or read."""


@dataclass(frozen=True)
class Lock:
    """One requirement file: from a pyproject.toml extra (or from `requirements`), under `constraints`."""

    name: str
    extra: str | None = None
    constraints: str | None = None  # the name of another lock

    @property
    def path(self) -> Path:
        return REQUIREMENTS_DIR / f"{self.name}.txt"


# In compile order: the constrained files come after torch.txt.
LOCKS = (
    Lock("build"),
    Lock("torch"),
    Lock("operator", extra="operator"),
    Lock("generator", extra="generator", constraints="torch"),
    Lock("trainer", extra="trainer", constraints="torch"),
)
LOCKS_BY_NAME = {lock.name: lock for lock in LOCKS}


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """The `name==version` pins of a requirement file, by normalized name."""
    return {normalize(match["name"]): match["version"] for match in _PIN_RE.finditer(text)}


def torch_base_version(dockerfile_text: str) -> str:
    """The torch version of the trainer's public base, which its tag names."""
    match = _TORCH_BASE_RE.search(dockerfile_text)
    if match is None:
        raise RequirementsError(
            f"{TRAINER_DOCKERFILE} has no `ARG BASE=pytorch/pytorch:<torch version>-…` line"
        )
    return match["version"]


def direct_requirements(lock: Lock, pyproject: dict[str, Any], trainer_dockerfile: str) -> list[str]:
    """What `lock` is compiled from, as requirement strings."""
    if lock.name == "build":
        return list(pyproject["build-system"]["requires"])
    if lock.name == "torch":
        return [f"torch=={torch_base_version(trainer_dockerfile)}"]
    project = pyproject["project"]
    return [*project["dependencies"], *project["optional-dependencies"][lock.extra]]


def inputs_digest(requirements: list[str], constraints_text: str | None) -> str:
    """A digest of everything a requirement file is compiled from."""
    lines = sorted(requirements)
    if constraints_text is not None:
        lines += [f"constraint {name}=={version}" for name, version in sorted(pins(constraints_text).items())]
    lines += [f"python {PYTHON_VERSION}", f"platform {PYTHON_PLATFORM}"]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def recorded_digest(text: str) -> str | None:
    match = _DIGEST_RE.search(text)
    return match["digest"] if match else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _requirements(lock: Lock) -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return direct_requirements(lock, pyproject, TRAINER_DOCKERFILE.read_text())


def expected_digest(lock: Lock) -> str:
    constraints = _read(LOCKS_BY_NAME[lock.constraints].path) if lock.constraints else None
    return inputs_digest(_requirements(lock), constraints)


def stale_locks() -> list[str]:
    """The requirement files that were not compiled from what pyproject.toml says now."""
    return [
        str(lock.path.relative_to(ROOT))
        for lock in LOCKS
        if recorded_digest(_read(lock.path)) != expected_digest(lock)
    ]


def compile_locks(uv: str) -> list[Path]:
    """(Re)compiles every requirement file with `uv pip compile` (PyPI) and returns their paths."""
    REQUIREMENTS_DIR.mkdir(parents=True, exist_ok=True)
    for lock in LOCKS:
        text = _compile(uv, lock)
        lock.path.write_text(f"# labtune-inputs: {expected_digest(lock)}\n{text}")
    return [lock.path for lock in LOCKS]


def _compile(uv: str, lock: Lock) -> str:
    # An extra compiles from pyproject.toml itself (its pins say `via labtune`); the rest from stdin.
    source = ["pyproject.toml", "--extra", lock.extra] if lock.extra else ["-"]
    stdin = None if lock.extra else "\n".join(_requirements(lock)) + "\n"
    if lock.constraints:
        source += ["--constraint", str(LOCKS_BY_NAME[lock.constraints].path.relative_to(ROOT))]
    argv = [uv, "pip", "compile", "--quiet", *source, "--custom-compile-command", LOCK_COMMAND]
    argv += ["--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM]
    result = subprocess.run(argv, cwd=ROOT, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-20:])
        raise RequirementsError(
            f"`uv pip compile` of {lock.name}.txt failed (exit {result.returncode}):\n{tail}"
        )
    return result.stdout
