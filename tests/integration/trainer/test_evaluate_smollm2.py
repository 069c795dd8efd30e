"""`labtune evaluate` on the real SmolLM2-135M-Instruct, on CPU: a true answer is likelier than a
wrong one, and a LoRA adapter tuned on a fact (by the trainer, a few steps) makes that fact's answer
likelier than the base does, the base and the adapter scored in one run over one loaded base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from labtune.contract.evaluate import EvaluateSummary, ExampleResult
from labtune.contract.train import TrainSummary
from labtune.trainer.trainer_cli import run as labtune_train

pytestmark = pytest.mark.integration

FACT = ("What is the code name of project Zephyr?", "Project Zephyr is code-named Heron.")
FRANCE = "What is the capital of France?"


def _example(id: str, leaf: str, question: str, answer: str) -> dict[str, str]:
    return {"id": id, "leaf": leaf, "leafType": "knowledge", "question": question, "answer": answer}


EXAMPLES = [
    _example("paris", "knowledge/geography/qna.yaml", FRANCE, "The capital of France is Paris."),
    _example("london", "knowledge/geography/qna.yaml", FRANCE, "The capital of France is London."),
    _example("zephyr", "knowledge/projects/qna.yaml", *FACT),
]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, train_config: Callable[..., Path]) -> Path:
    """A LoRA adapter trained on the fact (a few steps, by `labtune train`'s code in this process)."""
    folder = tmp_path_factory.mktemp("tuned")
    record = {"messages": [{"role": "user", "content": FACT[0]}, {"role": "assistant", "content": FACT[1]}]}
    data = folder / "fact.jsonl"
    data.write_text((json.dumps(record) + "\n") * 8)
    phase = {"name": "knowledge", "dataset": "knowledge", "learningRate": 2e-3, "maxSeqLen": 64}
    config = train_config(
        folder,
        datasets={"knowledge": str(data)},
        phases=[phase | {"epochs": 2, "effectiveBatchSize": 4}],  # 4 steps
        evaluation={"heldOutFraction": 0.0},
        checkpoints={"everySteps": 100, "keep": 1},
        mergeAdapter=False,
        loggingSteps=10,  # more than the run has: its loss still reaches the summary
    )
    started = time.monotonic()
    assert labtune_train(config) == 0
    print(f"train: {time.monotonic() - started:.1f} s")
    summary = TrainSummary.model_validate_json((folder / "termination-log").read_text())
    assert summary.metrics.loss is not None
    assert 0.0 < summary.metrics.loss < 10.0
    return folder / "out" / "adapter"


def test_a_true_answer_is_likelier_and_the_tuned_fact_likelier_than_the_base(
    tmp_path: Path, smollm2: Path, adapter: Path
) -> None:
    dataset = tmp_path / "evaluation.jsonl"
    dataset.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    config = tmp_path / "evaluate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "metricsPort": 0,
                "terminationLog": str(tmp_path / "termination-log"),
                "output": str(tmp_path / "out"),
                "models": [
                    {"name": "base", "base": {"uri": str(smollm2)}},
                    {"name": "tuned", "base": {"uri": str(smollm2)}, "adapter": str(adapter)},
                ],
                "benchmarks": [
                    {
                        "type": "reference",
                        "name": "held-out",
                        "dataset": str(dataset),
                        "generation": {"maxNewTokens": 16},
                    }
                ],
            }
        )
    )
    started = time.monotonic()
    command = [str(Path(sys.executable).parent / "labtune"), "evaluate", "--config", str(config)]
    process = subprocess.run(
        command, env=os.environ | {"PYTHONUNBUFFERED": "1"}, capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    assert process.returncode == 0, process.stderr
    loads = [line for line in process.stderr.splitlines() if "loading base model" in line]
    assert len(loads) == 1, loads  # one copy of the base for both models
    assert loads[0].endswith(f"loading base model {smollm2} for base, tuned")
    results = {
        (r.model, r.id): r
        for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
        if (r := ExampleResult.model_validate_json(line))
    }
    nll = {key: r.nll for key, r in results.items()}
    print(f"evaluate: {seconds:.1f} s; NLL {json.dumps({f'{m}/{i}': v for (m, i), v in nll.items()})}")
    print({f"{m}/{i}": r.generated for (m, i), r in results.items()})

    assert nll[("base", "paris")] < nll[("base", "london")]
    assert nll[("tuned", "zephyr")] < 0.5 * nll[("base", "zephyr")]  # type: ignore[operator]
    generated = results[("base", "paris")].generated or ""
    assert "paris" in generated.lower()
    assert results[("tuned", "zephyr")].contains  # the tuned model answers with the fact
    assert not results[("base", "zephyr")].contains

    summary = EvaluateSummary.model_validate_json((tmp_path / "termination-log").read_text())
    (benchmark,) = summary.benchmarks
    assert benchmark.models["tuned"].nll is not None
    projects = next(leaf for leaf in summary.leaves if leaf.leaf == "knowledge/projects/qna.yaml")
    assert projects.models["tuned"].nll == pytest.approx(nll[("tuned", "zephyr")], abs=1e-4)
