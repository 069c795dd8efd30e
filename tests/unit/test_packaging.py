"""The distribution maps the design's folders to labtune.* and installs from a built wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _source_packages() -> set[str]:
    """Every package in the source tree, named as it is installed."""
    found = set()
    for name, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            if name == "labtune" and relative and f"labtune.{relative[0]}" in SETUPTOOLS["package-dir"]:
                continue
            found.add(".".join((name, *relative)))
    return found


def test_every_package_folder_is_listed() -> None:
    assert _source_packages() == set(SETUPTOOLS["packages"])


def test_no_top_level_operator_package() -> None:
    assert "operator" not in SETUPTOOLS["packages"]
    assert SETUPTOOLS["package-dir"]["labtune.operator"] == "operator"


def _uv() -> list[str]:
    uv = os.environ.get("UV") or shutil.which("uv")
    return [uv] if uv else [sys.executable, "-m", "uv"]


def test_built_wheel_installs_and_imports(tmp_path: Path) -> None:
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run([*_uv(), "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True)
    (wheel,) = dist.glob("labtune-*.whl")
    subprocess.run([*_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*_uv(), "pip", "install", "--quiet", "--python", str(python), str(wheel)], check=True)
    imports = "; ".join(f"import {p}" for p in sorted(SETUPTOOLS["packages"]))
    probe = (
        f"{imports}; import operator, labtune.operator, sys; "
        "assert operator.__file__.startswith(sys.base_prefix), operator.__file__; "
        "print(labtune.operator.__file__)"
    )
    # Run outside the clone so that nothing is imported from the source tree.
    out = subprocess.run([python, "-c", probe], check=True, cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip().startswith(str(venv))
    cli = subprocess.run([venv / "bin" / "labtune", "--version"], check=True, capture_output=True, text=True)
    assert "labtune, version" in cli.stdout
    # The dev cluster (dev/, the labtune-dev distribution) is neither in the wheel nor in its CLI.
    with zipfile.ZipFile(wheel) as archive:
        assert not [name for name in archive.namelist() if "labtune_dev" in name or "devcluster" in name]
    commands = subprocess.run(
        [venv / "bin" / "labtune", "--help"], check=True, capture_output=True, text=True
    )
    assert "crds" in commands.stdout
    assert " dev " not in commands.stdout


def test_editable_install_maps_the_folders() -> None:
    import importlib.metadata
    import json

    import labtune.generator
    import labtune.operator
    import labtune.trainer

    direct_url = importlib.metadata.distribution("labtune").read_text("direct_url.json") or "{}"
    assert json.loads(direct_url).get("dir_info", {}).get("editable"), "tests run on the editable install"
    for module, folder in [
        (labtune.operator, "operator"),
        (labtune.generator, "generator"),
        (labtune.trainer, "trainer"),
    ]:
        assert Path(module.__file__ or "").parent == ROOT / folder
