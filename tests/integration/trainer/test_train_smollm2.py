"""`labtune train` on the real SmolLM2-135M-Instruct, on CPU."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, DataCollatorWithFlattening, PreTrainedModel

from labtune.contract import EXIT_PREEMPTED
from labtune.contract.metric_names import TRAIN_STEP, TRAIN_TOTAL_STEPS
from labtune.contract.train import TrainSummary
from labtune.trainer.dataset_reader import read_samples
from labtune.trainer.layout import COMPLETE
from labtune.trainer.loss import trained_token_loss_sum
from labtune.trainer.modeling import load_tokenizer
from labtune.trainer.splits import prepare_phase_data, split_samples
from labtune_dev.models import smollm2_gguf

pytestmark = pytest.mark.integration

ADAPTER = "adapter_model.safetensors"


def labtune_train(config: Path, **popen: Any) -> subprocess.Popen[str]:
    """`labtune train --config` as the pod runs it."""
    command = [str(Path(sys.executable).parent / "labtune"), "train", "--config", str(config)]
    return subprocess.Popen(command, env=os.environ | {"PYTHONUNBUFFERED": "1"}, text=True, **popen)


@dataclass(frozen=True)
class Run:
    folder: Path
    returncode: int

    @property
    def out(self) -> Path:
        return self.folder / "out"

    @property
    def summary(self) -> TrainSummary:
        return TrainSummary.model_validate_json((self.folder / "termination-log").read_text())


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, train_config: Callable[..., Path]) -> Run:
    """Both phases, uninterrupted, adapter merged."""
    folder = tmp_path_factory.mktemp("reference")
    return Run(folder, labtune_train(train_config(folder)).wait(timeout=900))


def _phase_losses(run: Run, phase: str) -> list[float]:
    checkpoint = Path(next(c.uri for c in run.summary.checkpoints if c.phase == phase))
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def test_loss_falls_and_both_dataset_formats_train(reference_run: Run) -> None:
    assert reference_run.returncode == 0
    summary = reference_run.summary
    assert [(p.name, p.train_samples, p.eval_samples, p.steps) for p in summary.phases] == [
        ("knowledge", 13, 3, 4),  # InstructLab SDG records (pretraining messages)
        ("skills", 13, 3, 4),  # the generator's records
    ]
    knowledge = _phase_losses(reference_run, "knowledge")
    assert len(knowledge) == 4
    assert knowledge[-1] < 0.8 * knowledge[0]
    assert summary.best_eval_loss is not None
    assert summary.output.adapter_sha256
    assert summary.output.model_sha256


def _held_out_loss(model: PreTrainedModel | PeftModel, smollm2: Path, dataset: Path) -> float:
    """Token-level loss on the skills phase's held-out samples (the split the run used)."""
    tokenizer = load_tokenizer(smollm2, None)
    split = split_samples(read_samples(dataset), fraction=0.2, seed=42)
    data = prepare_phase_data(split, tokenizer, max_seq_len=128, name="skills")
    records = [{"input_ids": s.input_ids, "labels": s.labels} for s in data.held_out]
    batch = DataCollatorWithFlattening()(records)
    with torch.no_grad():
        total, _ = trained_token_loss_sum(model.eval(), dict(batch))
    return float(total) / int((batch["labels"][0, 1:] != -100).sum())


def test_the_merged_model_reloads_with_the_adapters_eval_loss(
    reference_run: Run, smollm2: Path, datasets: dict[str, Path]
) -> None:
    merged = AutoModelForCausalLM.from_pretrained(reference_run.out / "model", dtype=torch.float32)
    merged_loss = _held_out_loss(merged, smollm2, datasets["skills"])
    base = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    base_loss = _held_out_loss(base, smollm2, datasets["skills"])
    adapted = PeftModel.from_pretrained(base, str(reference_run.out / "adapter"))
    assert merged_loss == pytest.approx(_held_out_loss(adapted, smollm2, datasets["skills"]), rel=1e-4)
    assert merged_loss < base_loss  # and the tuning did something


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = [line.split(" ") for line in body.splitlines() if not line.startswith("#")]
    return {name: float(value) for name, value in samples}


def _first_step(process: subprocess.Popen[str], phase: str) -> int:
    """The step of the first progress line of a phase in the process's stderr."""
    assert process.stderr is not None
    progress = re.compile(rf"{phase} step (\d+)/")
    return next(int(m.group(1)) for line in process.stderr if (m := progress.search(line)))


def test_sigterm_saves_a_checkpoint_and_a_restart_resumes_to_the_uninterrupted_result(
    tmp_path: Path, train_config: Callable[..., Path], reference_run: Run
) -> None:
    """The knowledge phase of the reference run, stopped by SIGTERM during step 2 and started again."""
    port = _free_port()
    knowledge = train_config(tmp_path / "reference").read_text()  # the reference's phases
    config = train_config(tmp_path, metricsPort=port, mergeAdapter=False)
    phases = yaml.safe_load(knowledge)["phases"][:1]
    config.write_text(yaml.safe_dump(yaml.safe_load(config.read_text()) | {"phases": phases}))

    process = labtune_train(config, stderr=subprocess.PIPE)
    assert _first_step(process, "knowledge") == 1
    metrics = _scrape(port)  # served while training
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    process.stderr.read()
    assert process.wait(timeout=300) == EXIT_PREEMPTED
    assert metrics[TRAIN_STEP] == 1
    assert metrics[TRAIN_TOTAL_STEPS] == 4

    out = tmp_path / "out"
    saved = [p for p in (out / "phases" / "knowledge").glob("checkpoint-*") if (p / COMPLETE).exists()]
    last = max(int(p.name.split("-")[1]) for p in saved)
    assert 2 <= last < 4  # saved where it stopped, not at the phase's end
    assert not (out / "adapter").exists()
    assert not (out / "summary.json").exists()

    restarted = labtune_train(config, stderr=subprocess.PIPE)
    assert _first_step(restarted, "knowledge") == last + 1  # resumed, not started over
    assert restarted.stderr is not None
    restarted.stderr.read()
    assert restarted.wait(timeout=900) == 0
    resumed = Run(tmp_path, 0).summary
    reference = json.loads((reference_run.out / "phases" / "knowledge" / "result.json").read_text())
    assert resumed.steps == reference["summary"]["steps"] == 4
    assert (resumed.restarts, reference_run.summary.restarts) == (1, 0)  # counted for status.restarts
    # Restored optimizer, schedule, RNG and data position: the same result, up to float noise.
    assert resumed.best_eval_loss == pytest.approx(reference["best_eval_loss"], rel=1e-3)


def test_two_processes_on_cpu_stop_on_sigterm_resume_and_train_the_same_adapter_shape(
    tmp_path: Path, train_config: Callable[..., Path], reference_run: Run
) -> None:
    """`labtune train` starts torchrun (gloo); SIGTERM to it stops both workers at the same step;
    after training the first process scores the benchmark while the second waits for its summary."""
    phase = {"name": "skills", "dataset": "skills", "maxSeqLen": 128, "effectiveBatchSize": 4}
    questions = tmp_path / "evaluation.jsonl"
    question = {"leaf": "compositional_skills/capitals/qna.yaml", "leafType": "freeform_skill"}
    questions.write_text(
        "".join(
            json.dumps(
                question | {"id": w, "question": f"Write the word {w} in capitals.", "answer": w.upper()}
            )
            + "\n"
            for w in ("quartz", "willow")
        )
    )
    benchmark = {"name": "held-out", "dataset": str(questions), "generation": False}
    config = train_config(
        tmp_path,
        distributed={"procsPerNode": 2},
        phases=[phase],
        mergeAdapter=False,
        evaluation={"heldOutFraction": 0.2, "benchmarks": [benchmark]},
    )
    process = labtune_train(config, stderr=subprocess.PIPE)
    assert _first_step(process, "skills") == 1
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    process.stderr.read()
    assert process.wait(timeout=300) == EXIT_PREEMPTED
    saved = [
        p for p in (tmp_path / "out" / "phases" / "skills").glob("checkpoint-*") if (p / COMPLETE).exists()
    ]
    assert saved

    assert labtune_train(config).wait(timeout=900) == 0
    summary = Run(tmp_path, 0).summary
    assert summary.phases[0].steps == 4  # 13 samples, 4 a step: 2 in each of 2 processes
    assert summary.evaluation is not None
    assert summary.evaluation.benchmarks[0].examples == 2
    ddp = load_file(tmp_path / "out" / "adapter" / ADAPTER)
    single = load_file(reference_run.out / "adapter" / ADAPTER)
    assert {k: v.shape for k, v in ddp.items()} == {k: v.shape for k, v in single.items()}


def test_a_gguf_file_is_a_base_model(tmp_path: Path, train_config: Callable[..., Path]) -> None:
    config = train_config(
        tmp_path,
        baseModel={"uri": str(smollm2_gguf())},
        phases=[{"name": "skills", "dataset": "skills", "maxSeqLen": 128, "effectiveBatchSize": 32}],
        evaluation={"heldOutFraction": 0.0},
        mergeAdapter=False,
    )
    assert labtune_train(config).wait(timeout=900) == 0
    assert Run(tmp_path, 0).summary.steps == 1
