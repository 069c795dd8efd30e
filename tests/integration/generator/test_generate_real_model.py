"""Generation with a real model: SmolLM2-135M-Instruct in-process through transformers and
behind llama.cpp's OpenAI-compatible server; InstructLab's training library reads the output."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from holdout_check import held_out_leaks

from labtune.contract.evaluate import EvalExample
from labtune.contract.generate import GenerateConfig, GenerateSummary
from labtune.contract.records import Record
from labtune.generator.run import generate
from labtune.generator.teacher import Completion, CompletionRequest

if TYPE_CHECKING:
    from conftest import Testkit

    from labtune.generator.teacher_transformers import TransformersTeacher
    from tests.unit.generator.conftest import SampleTaxonomy

LABTUNE = str(Path(sys.executable).parent / "labtune")
SCALE = {"samplesPerSeed": 1, "chunkTokens": 256, "seed": 5}


@pytest.fixture(scope="session")
def taxonomy(tmp_path_factory: pytest.TempPathFactory, testkit: Testkit) -> SampleTaxonomy:
    sample: SampleTaxonomy = testkit.unit.make_sample_taxonomy(tmp_path_factory.mktemp("repos"))
    return sample


@pytest.fixture(scope="session")
def transformers_run(
    taxonomy: SampleTaxonomy,
    transformers_teacher: TransformersTeacher,
    smollm2: Path,
    tmp_path_factory: pytest.TempPathFactory,
    testkit: Testkit,
) -> tuple[GenerateConfig, GenerateSummary]:
    config: GenerateConfig = testkit.unit.generate_config(
        taxonomy,
        tmp_path_factory.mktemp("transformers"),
        include=["knowledge/**", "compositional_skills/writing/**"],
        pipeline={"path": str(testkit.tiny_pipeline)},
        scale=SCALE,
        teacher={"backend": "transformers", "model": str(smollm2)},
    )
    return config, generate(config, teacher=transformers_teacher)


def test_transformers_teacher_generates_on_one_long_lived_thread(
    transformers_teacher: TransformersTeacher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `complete` runs `generate` on the teacher's own thread, across event loops: a fresh
    thread per call pays torch's per-thread warm-up again (the transformers benchmark's gap)."""
    threads: list[threading.Thread] = []
    real_generate = transformers_teacher.generate

    def recording(requests: Sequence[CompletionRequest]) -> list[Completion]:
        threads.append(threading.current_thread())
        return real_generate(requests)

    monkeypatch.setattr(transformers_teacher, "generate", recording)
    request = CompletionRequest(prompt="Say hi.", system=None, max_tokens=2, temperature=0.0, seed=1)
    for _ in range(3):
        [reply] = asyncio.run(transformers_teacher.complete([request]))
        assert reply.completion_tokens > 0
    assert len(threads) == 3
    assert all(thread is threads[0] for thread in threads)
    assert threads[0] is not threading.current_thread()  # off the event loop's thread


def _records(uri: str) -> list[Record]:
    return [Record.model_validate_json(line) for line in Path(uri).read_text().splitlines()]


def test_transformers_backend(transformers_run: tuple[GenerateConfig, GenerateSummary]) -> None:
    _, summary = transformers_run
    assert (summary.leaves_done, summary.teacher_model) == (2, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert summary.outputs.knowledge is not None
    assert summary.outputs.skills is not None
    knowledge = _records(summary.outputs.knowledge.uri)
    assert knowledge
    assert all(r.unmask and r.messages[1].content for r in knowledge)
    assert summary.stages["freeform_skill/question"] == 5
    assert summary.samples_kept == len(knowledge) + 5


def test_transformers_backend_is_seeded(
    transformers_run: tuple[GenerateConfig, GenerateSummary],
    transformers_teacher: TransformersTeacher,
    tmp_path: Path,
) -> None:
    config, first = transformers_run
    again = generate(
        config.model_copy(
            update={"output": str(tmp_path / "again"), "include": ["compositional_skills/writing/**"]}
        ),
        teacher=transformers_teacher,
    )
    assert again.outputs.knowledge is None
    first_skills = [
        r
        for r in _records(first.outputs.skills.uri)  # type: ignore[union-attr]
        if r.metadata.source == "generated" and r.metadata.leaf_type != "knowledge"
    ]
    again_skills = _records(again.outputs.skills.uri)  # type: ignore[union-attr]
    assert sorted(r.messages[0].content for r in again_skills) == sorted(
        r.messages[0].content for r in first_skills
    )


def test_the_real_teacher_never_sees_the_held_out_seeds_nor_do_the_datasets(
    taxonomy: SampleTaxonomy,
    transformers_teacher: TransformersTeacher,
    smollm2: Path,
    tmp_path: Path,
    testkit: Testkit,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts: list[str] = []
    real_generate = transformers_teacher.generate

    def recording(requests: Sequence[CompletionRequest]) -> list[Completion]:
        prompts.extend(r.prompt for r in requests)
        return real_generate(requests)

    monkeypatch.setattr(transformers_teacher, "generate", recording)
    config: GenerateConfig = testkit.unit.generate_config(
        taxonomy,
        tmp_path,
        pipeline={"path": str(testkit.tiny_pipeline)},
        scale=SCALE,
        teacher={"backend": "transformers", "model": str(smollm2)},
        evaluation={"heldOutSeeds": 1},
    )
    summary = generate(config, teacher=transformers_teacher)
    assert len(prompts) >= summary.samples_kept > 0  # the prompts were recorded
    assert summary.outputs.evaluation is not None
    questions = [
        EvalExample.model_validate_json(line)
        for line in Path(summary.outputs.evaluation.uri).read_text().splitlines()
    ]
    assert len({q.leaf for q in questions}) == 3  # every leaf held one seed back
    document = (taxonomy.documents / "sun.md").read_text()
    checked, leaks = held_out_leaks(taxonomy.root, document, config, prompts)
    assert leaks == []
    assert checked >= 3 + 2  # the knowledge seed's questions and the skills' questions at least


def test_instructlab_training_reads_the_datasets(
    transformers_run: tuple[GenerateConfig, GenerateSummary],
    transformers_teacher: TransformersTeacher,
    tmp_path: Path,
) -> None:
    from instructlab.training.data_process import process_data

    model = tmp_path / "model"  # the tokenizer (with its chat template) and config the library loads
    tokenizer = transformers_teacher.tokenizer
    tokenizer.save_pretrained(model)
    transformers_teacher.model.config.save_pretrained(model)
    _, summary = transformers_run
    for name, output in (("knowledge", summary.outputs.knowledge), ("skills", summary.outputs.skills)):
        assert output is not None
        process_data(
            data_path=output.uri,
            data_output_path=str(tmp_path / name),
            max_seq_len=2048,
            model_path=str(model),
            num_cpu_procs=1,
        )
        processed = [json.loads(line) for line in (tmp_path / name / "data.jsonl").read_text().splitlines()]
        assert len(processed) == output.samples
        records = _records(output.uri)
        for sample in processed:
            assert len(sample["input_ids"]) == len(sample["labels"]) == sample["len"]
            labelled = zip(sample["input_ids"], sample["labels"], strict=True)
            trained = tokenizer.decode([token for token, label in labelled if label != -100])
            # unmask (knowledge whole, auxiliary): the user turn is trained on too; else (skills,
            # RAFT) only the answer. A RAFT sample and its whole form share their answer.
            answer_only = trained.removesuffix(tokenizer.eos_token).strip()
            assert any(
                record.messages[0].content.strip() in trained
                if record.unmask
                else answer_only == record.messages[-1].content.strip()
                for record in records
                if record.messages[-1].content.strip() in trained
            ), trained


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text: str = response.read().decode()
        return text


def test_generate_command_with_llama_cpp_server(
    llama_server: str, taxonomy: SampleTaxonomy, tmp_path: Path, testkit: Testkit
) -> None:
    port = testkit.free_port()
    config = {
        "taxonomy": {"url": str(taxonomy.root), "commit": taxonomy.commit},
        "leaves": "all",
        "include": ["compositional_skills/**"],
        "teacher": {
            "backend": "openai",
            "url": llama_server,
            "model": "smollm2",
            "maxConcurrency": 4,
            "maxRetries": 2,
            "timeoutSeconds": 120,
        },
        "pipeline": {"path": str(testkit.tiny_pipeline)},
        "scale": SCALE,
        "output": str(tmp_path / "datasets"),
        "metricsPort": port,
        "terminationLog": str(tmp_path / "termination-log"),
    }
    (tmp_path / "generate.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.Popen(
        [LABTUNE, "generate", "--config", str(tmp_path / "generate.yaml")], stderr=subprocess.PIPE, text=True
    )
    scraped = ""
    while run.poll() is None and "labtune_generator_leaves_total 2.0" not in scraped:
        try:
            scraped = _scrape(port)
        except OSError:
            time.sleep(0.2)
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr
    assert "labtune_generator_leaves_total 2.0" in scraped, "metrics are served while the run goes on"
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["teacherModel"] == "smollm2"
    assert summary["leavesDone"] == 2
    assert summary["outputs"]["skills"]["samples"] == 10
    assert "knowledge" not in summary["outputs"]


def test_completions_api_with_llama_cpp_server(
    llama_server: str, taxonomy: SampleTaxonomy, tmp_path: Path, testkit: Testkit
) -> None:
    config: GenerateConfig = testkit.unit.generate_config(
        taxonomy,
        tmp_path,
        include=["compositional_skills/extraction/**"],
        pipeline={"path": str(testkit.tiny_pipeline)},
        scale=SCALE,
        teacher={"backend": "openai", "api": "completions", "url": llama_server, "model": "smollm2"},
    )
    summary = generate(config)
    assert summary.outputs.skills is not None
    records = _records(summary.outputs.skills.uri)
    # The raw prompt (no chat template) sometimes gets an empty reply from so small a model:
    # those are dropped and counted as malformed.
    report = json.loads((tmp_path / "datasets/report.json").read_text())
    (question,) = [s for s in report["leaves"][0]["stages"] if s["stage"] == "question"]
    assert 0 < len(records) <= question["output"]
    assert question["output"] + question["malformed"] == 5
    assert all(r.metadata.leaf_type == "grounded_skill" for r in records)
