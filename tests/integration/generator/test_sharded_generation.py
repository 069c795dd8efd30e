"""A run split in two shards, on the real SmolLM2-135M teacher behind llama.cpp's OpenAI-compatible
server, every step a `labtune generate` process as the pods run it: the two shards at once and the
mix write the same bytes as one pod at temperature 0, and a shard killed mid-way is run again alone
and resumes from its checkpoints."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from labtune.generator.pipeline import packaged_path

if TYPE_CHECKING:
    from conftest import Testkit

    from tests.unit.generator.conftest import SampleTaxonomy

LABTUNE = str(Path(sys.executable).parent / "labtune")
DATASETS = ("knowledge.jsonl", "skills.jsonl")


@pytest.fixture(scope="module")
def greedy_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small-teacher pipeline at temperature 0 throughout: every reply is the teacher's most
    likely one, so a leaf's samples do not depend on which pod asked."""
    text = packaged_path("small-teacher").read_text().replace("temperature: 0.7", "temperature: 0.0")
    path = tmp_path_factory.mktemp("pipeline") / "greedy.yaml"
    path.write_text(text)
    return path


def _config(where: Path, taxonomy: SampleTaxonomy, url: str, pipeline: Path, shards: int, port: int) -> Path:
    config: dict[str, Any] = {
        "taxonomy": {"url": str(taxonomy.root), "commit": taxonomy.commit},
        "leaves": "all",
        "teacher": {"backend": "openai", "url": url, "model": "smollm2", "maxConcurrency": 2},
        "pipeline": {"path": str(pipeline)},
        "scale": {"samplesPerSeed": 1, "chunkTokens": 256, "seed": 5},
        "output": str(where / "datasets"),
        "metricsPort": port,
        "terminationLog": str(where / "termination-log"),
        "shards": shards,
    }
    where.mkdir(parents=True, exist_ok=True)
    path = where / "generate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(config: Path, *step: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [LABTUNE, "generate", "--config", str(config), *step], stderr=subprocess.PIPE, text=True
    )


def _run(config: Path, *step: str) -> str:
    process = _start(config, *step)
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr
    return stderr


def _datasets(config: Path) -> dict[str, bytes]:
    folder = config.parent / "datasets"
    return {name: (folder / name).read_bytes() for name in DATASETS}


@pytest.fixture(scope="module")
def one_pod(
    llama_server: str,
    taxonomy: SampleTaxonomy,
    greedy_pipeline: Path,
    tmp_path_factory: pytest.TempPathFactory,
    testkit: Testkit,
) -> dict[str, bytes]:
    where = tmp_path_factory.mktemp("one-pod")
    config = _config(where, taxonomy, llama_server, greedy_pipeline, 1, testkit.free_port())
    _run(config)
    return _datasets(config)


@pytest.fixture(scope="module")
def taxonomy(tmp_path_factory: pytest.TempPathFactory, testkit: Testkit) -> SampleTaxonomy:
    sample: SampleTaxonomy = testkit.unit.make_sample_taxonomy(tmp_path_factory.mktemp("repos"))
    return sample


def test_two_shards_at_once_then_the_mix_write_the_bytes_of_one_pod(
    llama_server: str,
    taxonomy: SampleTaxonomy,
    greedy_pipeline: Path,
    one_pod: dict[str, bytes],
    tmp_path: Path,
    testkit: Testkit,
) -> None:
    configs = [
        _config(tmp_path / f"shard-{i}", taxonomy, llama_server, greedy_pipeline, 2, testkit.free_port())
        for i in range(2)
    ]
    for config in configs:  # one output folder, as the pods of one Indexed Job share it
        text = config.read_text().replace(str(config.parent / "datasets"), str(tmp_path / "datasets"))
        config.write_text(text)
    shards = [_start(config, "--shard", str(index)) for index, config in enumerate(configs)]
    for shard in shards:
        _, stderr = shard.communicate(timeout=900)
        assert shard.returncode == 0, stderr
    _run(configs[0], "--mix")
    folder = tmp_path / "datasets"
    assert {name: (folder / name).read_bytes() for name in DATASETS} == one_pod


def test_a_shard_killed_mid_way_is_run_again_alone_and_resumes(
    llama_server: str,
    taxonomy: SampleTaxonomy,
    greedy_pipeline: Path,
    one_pod: dict[str, bytes],
    tmp_path: Path,
    testkit: Testkit,
) -> None:
    config = _config(tmp_path, taxonomy, llama_server, greedy_pipeline, 2, testkit.free_port())
    _run(config, "--shard", "1")
    checkpoints = tmp_path / "datasets" / "checkpoints"
    before = set(checkpoints.glob("*/stage-*.jsonl"))  # shard 1's
    killed = _start(config, "--shard", "0")
    deadline = time.monotonic() + 600

    def made() -> int:
        return len(set(checkpoints.glob("*/stage-*.jsonl")) - before)

    # Two stages of its own: at least one of them asked the teacher (a skill's first only combines).
    while made() < 2 and killed.poll() is None:
        assert time.monotonic() < deadline, "shard 0 made no checkpoint in 10 minutes"
        time.sleep(0.1)
    assert killed.poll() is None, "shard 0 finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()

    stderr = _run(config, "--shard", "0")
    # The work done before the kill is not done again: a leaf resumes after its last stage, or is
    # taken whole when it had finished.
    assert "resuming after stage" in stderr or "finished earlier" in stderr, stderr
    assert "shard-001.json" in {p.name for p in (tmp_path / "datasets" / "shards").iterdir()}
    _run(config, "--mix")
    assert _datasets(config) == one_pod
