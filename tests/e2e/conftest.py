"""The end-to-end tests run the demo's environment (labtune_dev.demo) on the session's control
plane: they need the CRDs fixture of the integration tests, loaded here from their conftest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any


def _load_integration_conftest() -> Any:
    path = Path(__file__).parents[1] / "integration/conftest.py"
    spec = importlib.util.spec_from_file_location("integration_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


labtune_crds = _load_integration_conftest().labtune_crds
