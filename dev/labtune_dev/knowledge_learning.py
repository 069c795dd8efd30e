"""Does a model tuned by labtune learn a taxonomy's knowledge? One knowledge leaf of facts no model
can know (the demo's: the fictional Veltrane Archipelago, 12 facts in a Markdown document, in a git
repository of its own), the real SmolLM2-135M-Instruct as teacher and as student, and the documented commands:
`labtune generate` (the packaged `small-teacher` pipeline), `labtune train` (LoRA, knowledge then
skills phase) and `labtune evaluate`, which scores the base model and the tuned adapter on 12
questions asked without the document and worded unlike anything in the seeds or the data (the
reference is the fact alone: `nll` is its mean per-token negative log-likelihood, `contains` whether
the generated answer names it).

`lab=False` runs the same with the knowledge samples as they were before LAB's assembly: the
generated question and answer alone (no chunk in the sample, no auxiliary samples), for the figures
that say what the document in the sample changes. Used by the integration test and by
`benchmarks/knowledge_learning.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from labtune.api.tuning_job_types import EvalScores
from labtune.contract.evaluate import EvaluateSummary
from labtune.contract.generate import GenerateSummary
from labtune.generator.pipeline import packaged_path

LEAF = "knowledge/geography/veltrane/qna.yaml"
SEED = 7
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
"""The demo's sources: the leaf and its document."""


def data_file(name: str) -> Path:
    return Path(str(resources.files("labtune_dev") / "data" / name))


def leaf_file() -> Path:
    """The demo's Veltrane qna.yaml (document repository and commit to fill in)."""
    return DEMO / "taxonomy" / LEAF


def questions() -> list[dict[str, str]]:
    """The evaluation questions (EvalExample records)."""
    return [json.loads(line) for line in data_file("veltrane-questions.jsonl").read_text().splitlines()]


def _git(folder: Path, *args: str) -> str:
    identity = ["-c", "user.name=labtune", "-c", "user.email=labtune@example.com"]
    done = subprocess.run(["git", *identity, *args], cwd=folder, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _repo(folder: Path, files: dict[str, str]) -> str:
    """A git repository holding `files`; its commit."""
    folder.mkdir(parents=True)
    _git(folder, "init", "-q", "-b", "main")
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    _git(folder, "add", "-A")
    _git(folder, "commit", "-q", "-m", "veltrane")
    return _git(folder, "rev-parse", "HEAD")


def make_taxonomy(where: Path) -> tuple[Path, str]:
    """The taxonomy repository (one knowledge leaf) and its commit; the document is in a second one."""
    documents = where / "documents"
    commit = _repo(documents, {"veltrane.md": (DEMO / "documents" / "veltrane.md").read_text()})
    qna = leaf_file().read_text()
    qna = qna.replace("DOCUMENT_REPO", str(documents)).replace("DOCUMENT_COMMIT", commit)
    root = where / "taxonomy"
    return root, _repo(root, {LEAF: qna})


def pipeline(where: Path, *, lab: bool) -> Path:
    """The packaged small-teacher pipeline, or (lab=False) its knowledge samples as bare Q&A."""
    path = packaged_path("small-teacher")
    if lab:
        return path
    data = yaml.safe_load(path.read_text())
    del data["flows"]["knowledge"]["sample"]["context"], data["auxiliary"]
    bare = where / "pipeline-bare.yaml"
    bare.write_text(yaml.safe_dump(data))
    return bare


def _labtune(command: str, config: dict[str, Any], folder: Path) -> tuple[str, float]:
    """Runs `labtune <command> --config FILE` as a user would; its summary (the termination log)
    and wall time. A failure raises with the command's stderr."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{command}.yaml"
    path.write_text(
        yaml.safe_dump({"metricsPort": 0, "terminationLog": str(folder / "summary.json")} | config)
    )
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "labtune"), command, "--config", str(path)],
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"labtune {command} exited {done.returncode}: {done.stderr[-3000:]}")
    return (folder / "summary.json").read_text(), seconds


@dataclass(frozen=True)
class Outcome:
    base: EvalScores
    tuned: EvalScores
    generated: GenerateSummary
    seconds: dict[str, float]
    """Wall time of each command."""
    answers: dict[str, dict[str, str]]
    """Per model, each question's generated answer."""


def run(where: Path, model: Path, *, lab: bool = True, epochs: int = 4) -> Outcome:
    """Generates from the leaf, trains on it and scores base and tuned; `model` is SmolLM2's
    Hugging Face folder, teacher and student."""
    root, commit = make_taxonomy(where / "repos")
    generated_json, generate_s = _labtune(
        "generate",
        {
            "taxonomy": {"url": str(root), "commit": commit},
            "leaves": "all",
            "teacher": {"backend": "transformers", "model": str(model)},
            "pipeline": {"path": str(pipeline(where, lab=lab))},
            "scale": {"samplesPerSeed": 2, "chunkTokens": 128, "seed": SEED},
            "output": str(where / "datasets"),
        },
        where / "generate",
    )
    generated = GenerateSummary.model_validate_json(generated_json)
    outputs = generated.outputs
    if outputs.knowledge is None or outputs.skills is None:
        raise RuntimeError(f"labtune generate wrote no knowledge or no skills dataset: {outputs}")
    phase = {"maxSeqLen": 1024, "effectiveBatchSize": 8}
    _, train_s = _labtune(
        "train",
        {
            "output": str(where / "tuned"),
            "baseModel": {"uri": str(model)},
            "datasets": {"knowledge": outputs.knowledge.uri, "skills": outputs.skills.uri},
            "method": {"type": "lora", "lora": {"rank": 16, "alpha": 32.0, "dropout": 0.0}},
            "phases": [
                {
                    "name": "knowledge",
                    "dataset": "knowledge",
                    "learningRate": 2e-3,
                    "epochs": epochs,
                    **phase,
                },
                {"name": "skills", "dataset": "skills", "learningRate": 1e-3, "epochs": 1, **phase},
            ],
            "evaluation": {"heldOutFraction": 0.0},
            "checkpoints": {"everySteps": 1000, "keep": 1},
            "microBatchSize": 4,
            "mergeAdapter": False,
            "seed": SEED,
        },
        where / "train",
    )
    dataset = where / "questions.jsonl"
    shutil.copyfile(data_file("veltrane-questions.jsonl"), dataset)
    evaluated_json, evaluate_s = _labtune(
        "evaluate",
        {
            "output": str(where / "evaluation"),
            "models": [
                {"name": "base", "base": {"uri": str(model)}},
                {"name": "tuned", "base": {"uri": str(model)}, "adapter": str(where / "tuned" / "adapter")},
            ],
            "benchmarks": [
                {
                    "type": "reference",
                    "name": "veltrane",
                    "dataset": str(dataset),
                    "generation": {"maxNewTokens": 24},
                }
            ],
        },
        where / "evaluate",
    )
    (benchmark,) = EvaluateSummary.model_validate_json(evaluated_json).benchmarks
    answers: dict[str, dict[str, str]] = {}
    for line in (where / "evaluation" / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        answers.setdefault(result["model"], {})[result["id"]] = result.get("generated") or ""
    return Outcome(
        base=benchmark.models["base"],
        tuned=benchmark.models["tuned"],
        generated=generated,
        seconds={"generate": generate_s, "train": train_s, "evaluate": evaluate_s},
        answers=answers,
    )
