"""The generator tests' sample taxonomy (the demo's three leaves) as real git repositories, for the
benchmarks: tests/unit/generator/conftest.py loaded as a module (it is no package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def generator_testdata() -> Any:
    spec = importlib.util.spec_from_file_location(
        "generator_testdata", ROOT / "tests/unit/generator/conftest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
