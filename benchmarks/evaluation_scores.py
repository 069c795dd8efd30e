"""Evaluation figures, on SmolLM2-135M-Instruct and CPU:

- **demo**: the generator tests' taxonomy (tests/unit/generator/data: the demo's until 2026-12-03, whose
  knowledge leaf is now the invented Veltrane one, see knowledge_learning.py) through `labtune generate`
  (transformers teacher, `small-teacher` pipeline, one seed per leaf held out) and `labtune train`
  with the demo TuningJob's phases and its `held-out` benchmark: base and tuned scores; the time
  the evaluation takes against the training steps' time in one process; and the time it adds to
  the trainer pod's run (`labtune train` as a fresh process, with and without benchmarks, in
  alternating pairs: median of --rounds) against that run without it (target: at most 25 %);
- **facts**: a knowledge leaf of invented facts (--facts, at least 20; the training records written
  directly, one wording; the questions asked in another), trained by `labtune train` with the
  held-out benchmark: base and tuned scores;
- **lm-eval**: multiple choice on the facts through labtune (`score_choices`: task YAML written,
  lm-eval's HF backend, per-leaf results read back) against `lm_eval.simple_evaluate` called
  directly on the same task, model and batch size without per-sample logs (its fastest setting):
  questions/s, the median ratio of alternating pairs (target at least 0.95).

    python benchmarks/evaluation_scores.py [--part all|demo|facts|lm-eval] [--facts 24] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from generator_testdata import generator_testdata

from labtune.contract.evaluate import ChoiceExample
from labtune.contract.train import TrainSummary
from labtune.generator.pipeline import packaged_path
from labtune.generator.run import generate
from labtune.trainer.gguf_cache import hf_folder
from labtune.trainer.modeling import load_tokenizer
from labtune.trainer.multiple_choice import TASK_PREFIX, score_choices, write_task
from labtune.trainer.trainer_cli import run as labtune_train
from labtune_dev.models import smollm2_gguf

ROOT = Path(__file__).resolve().parents[1]
LABTUNE = str(Path(sys.executable).parent / "labtune")
DEMO_JOB = ROOT / "examples/demo/manifests/tuningjob.yaml"
DEMO_RUN = ROOT / "examples/demo/manifests/syntheticdatarun.yaml"
SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "quil", "an", "sef", "dru", "bel", "os", "nim", "par"]
SYLLABLES += ["ith", "ul", "gar", "zen"]


def train_config(
    folder: Path,
    model: Path,
    datasets: dict[str, str],
    phases: list[dict[str, Any]],
    evaluation: dict[str, Any],
) -> Path:
    config = {
        "metricsPort": 0,
        "terminationLog": str(folder / "termination-log"),
        "output": str(folder / "out"),
        "baseModel": {"uri": str(model)},
        "datasets": datasets,
        "method": {"type": "lora", "lora": {"rank": 8, "alpha": 16.0, "dropout": 0.0}},
        "phases": phases,
        "evaluation": evaluation,
        "microBatchSize": 4,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trained(config: Path) -> tuple[TrainSummary, float]:
    """`labtune train`'s code in this process: the summary and the wall time."""
    started = time.monotonic()
    assert labtune_train(config) == 0, f"labtune train failed: {config}"
    seconds = time.monotonic() - started
    return TrainSummary.model_validate_json((config.parent / "termination-log").read_text()), seconds


def report_scores(name: str, summary: TrainSummary, seconds: float) -> dict[str, Any]:
    evaluation = summary.evaluation
    assert evaluation is not None
    rows = {}
    for benchmark in evaluation.benchmarks:
        base, tuned = (
            benchmark.base.model_dump(exclude_none=True),
            benchmark.tuned.model_dump(exclude_none=True),
        )
        rows[benchmark.name] = {"examples": benchmark.examples, "base": base, "tuned": tuned}
        scores = "  ".join(f"{m} {base[m]:.3f} → {tuned[m]:.3f}" for m in base)
        print(f"{name}: {benchmark.name} ({benchmark.examples} questions): {scores}")
    training = seconds - evaluation.seconds
    share = evaluation.seconds / training
    print(
        f"{name}: training {training:.1f} s, evaluation {evaluation.seconds:.1f} s = {share:.0%} of training"
    )
    return {
        "benchmarks": rows,
        "training_seconds": training,
        "evaluation_seconds": evaluation.seconds,
        "share": share,
    }


def demo(work: Path, model: Path, rounds: int) -> dict[str, Any]:
    testdata = generator_testdata()
    from labtune.generator.generator_metrics import GeneratorMetrics
    from labtune.generator.teacher_transformers import TransformersTeacher

    run = yaml.safe_load(DEMO_RUN.read_text())["spec"]
    sample = testdata.make_sample_taxonomy(work / "repos")
    config = testdata.generate_config(
        sample,
        work / "generate",
        pipeline={"path": str(packaged_path("small-teacher"))},
        scale={k: v for k, v in run["scale"].items() if k != "maxConcurrency"},
        mixing=run["mixing"],
        evaluation=run["evaluation"],
        teacher={"backend": "transformers", "model": str(smollm2_gguf())},
    )
    teacher = TransformersTeacher(smollm2_gguf(), batch_size=8, metrics=GeneratorMetrics())
    started = time.monotonic()
    outputs = generate(config, teacher=teacher).outputs
    print(f"demo: generated in {time.monotonic() - started:.0f} s")
    assert outputs.knowledge is not None
    assert outputs.skills is not None
    assert outputs.evaluation is not None
    job = yaml.safe_load(DEMO_JOB.read_text())["spec"]
    evaluation = job["evaluation"]
    evaluation["benchmarks"] = [b | {"dataset": outputs.evaluation.uri} for b in evaluation["benchmarks"]]
    datasets = {"knowledge": outputs.knowledge.uri, "skills": outputs.skills.uri}
    folder = work / "train-demo"
    folder.mkdir()
    figures = report_scores(
        "demo", *trained(train_config(folder, model, datasets, job["phases"], evaluation))
    )
    return figures | {"job": added_to_the_job(work, model, datasets, job["phases"], evaluation, rounds)}


def median_ratio(ratios: list[float]) -> tuple[float, str]:
    """The median of the pairs' ratios, and every ratio for the report."""
    return statistics.median(ratios), " ".join(f"{r:.2f}" for r in ratios)


def pod_run(folder: Path) -> float:
    """`labtune train --config` as the trainer pod runs it (a fresh process): its wall time."""
    started = time.monotonic()
    subprocess.run(
        [LABTUNE, "train", "--config", str(folder / "config.yaml")], check=True, capture_output=True
    )
    return time.monotonic() - started


def added_to_the_job(
    work: Path,
    model: Path,
    datasets: dict[str, str],
    phases: list[dict[str, Any]],
    evaluation: dict[str, Any],
    rounds: int,
) -> dict[str, Any]:
    """The trainer pod's run with the demo's evaluation against the same run without benchmarks,
    in alternating pairs: the time evaluation adds to the TuningJob, over the run without it."""
    without = evaluation | {"benchmarks": []}
    added, plain, ratios = [], [], []
    for index in range(rounds):
        times = {}
        for name in ["with", "without"] if index % 2 == 0 else ["without", "with"]:
            folder = work / f"job-{index}-{name}"
            folder.mkdir()
            train_config(folder, model, datasets, phases, evaluation if name == "with" else without)
            times[name] = pod_run(folder)
        added.append(times["with"] - times["without"])
        plain.append(times["without"])
        ratios.append(added[-1] / times["without"])
    ratio, each = median_ratio(ratios)
    print(
        f"demo job: labtune train without evaluation {statistics.median(plain):.1f} s, evaluation adds "
        f"{statistics.median(added):.1f} s = {ratio:.0%} ({each})"
    )
    return {
        "without_seconds": statistics.median(plain),
        "added_seconds": statistics.median(added),
        "ratio": ratio,
    }


def invented_facts(count: int, seed: int = 11) -> list[tuple[str, str]]:
    """(project, code name) pairs of made-up words, so the base model cannot know them."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < 2 * count:
        words.add("".join(rng.sample(SYLLABLES, 3)).capitalize())
    names = sorted(words)
    rng.shuffle(names)
    return list(zip(names[:count], names[count:], strict=True))


def facts(work: Path, model: Path, count: int) -> dict[str, Any]:
    folder = work / "train-facts"
    folder.mkdir()
    pairs = invented_facts(count)
    training = [
        {
            "messages": [
                {"role": "user", "content": f"What is the code name of project {p}?"},
                {"role": "assistant", "content": f"Project {p} is code-named {n}."},
            ]
        }
        for p, n in pairs
    ]
    questions = [
        {
            "id": p.lower(),
            "leaf": "knowledge/projects/qna.yaml",
            "leafType": "knowledge",
            "question": f"Under which code name does the {p} project go?",
            "answer": f"Project {p} is code-named {n}.",
        }
        for p, n in pairs
    ]
    data, held_out = folder / "facts.jsonl", folder / "evaluation.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in training * 3))
    held_out.write_text("".join(json.dumps(q) + "\n" for q in questions))
    phases = [
        {
            "name": "knowledge",
            "dataset": "knowledge",
            "learningRate": 2e-3,
            "epochs": 1,
            "effectiveBatchSize": 4,
            "maxSeqLen": 64,
        }
    ]
    evaluation = {
        "heldOutFraction": 0.0,
        "benchmarks": [{"name": "held-out", "dataset": str(held_out), "maxNewTokens": 24}],
    }
    return report_scores(
        f"facts ({count})",
        *trained(train_config(folder, model, {"knowledge": str(data)}, phases, evaluation)),
    )


def choice_dataset(folder: Path, count: int) -> Path:
    pairs = invented_facts(count)
    rng = random.Random(5)
    names = [n for _, n in pairs]
    rows = []
    for i, (project, name) in enumerate(pairs):
        choices = [name, *rng.sample([n for n in names if n != name], 3)]
        rng.shuffle(choices)
        rows.append(
            ChoiceExample(
                id=f"q{i}",
                leaf="knowledge/projects/qna.yaml",
                question=f"What is the code name of project {project}?",
                choices=choices,
                answer=choices.index(name),
            )
        )
    path = folder / "choices.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return path


def lm_eval_ratio(work: Path, model_path: Path, count: int, rounds: int) -> dict[str, Any]:
    from lm_eval import simple_evaluate  # type: ignore[import-untyped]
    from lm_eval.models.huggingface import HFLM  # type: ignore[import-untyped]
    from lm_eval.tasks import TaskManager  # type: ignore[import-untyped]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path)
    model.eval()
    tokenizer = load_tokenizer(model_path, None)
    dataset = choice_dataset(work, count)
    folder = work / "lm-eval"
    direct_task = f"{TASK_PREFIX}direct"
    write_task(dataset, folder / "direct", direct_task)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=8)
    manager = TaskManager(include_path=str(folder / "direct"))

    def through_labtune() -> float:
        started = time.monotonic()
        score_choices(model, tokenizer, dataset, folder / "labtune", name="bench", batch_size=8)
        return count / (time.monotonic() - started)

    def directly() -> float:
        started = time.monotonic()
        simple_evaluate(
            model=lm, tasks=[direct_task], task_manager=manager, log_samples=False, bootstrap_iters=0
        )
        return count / (time.monotonic() - started)

    through_labtune(), directly()  # warm-up: task indexing, dataset cache, kernels
    ratios, labtune_rates, direct_rates = [], [], []
    for index in range(rounds):
        first, second = (through_labtune, directly) if index % 2 == 0 else (directly, through_labtune)
        a, b = first(), second()
        ours, theirs = (a, b) if first is through_labtune else (b, a)
        labtune_rates.append(ours)
        direct_rates.append(theirs)
        ratios.append(ours / theirs)
    ratio, each = median_ratio(ratios)
    print(
        f"lm-eval ({count} questions, 4 choices): labtune {statistics.median(labtune_rates):.1f}/s, "
        f"direct {statistics.median(direct_rates):.1f}/s, ratio {ratio:.2f} ({each})"
    )
    return {
        "questions": count,
        "labtune_per_second": statistics.median(labtune_rates),
        "direct_per_second": statistics.median(direct_rates),
        "ratio": ratio,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["all", "demo", "facts", "lm-eval"], default="all")
    parser.add_argument("--facts", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.facts < 20:
        parser.error("--facts: at least 20")
    model = hf_folder(smollm2_gguf())
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.part in ("all", "demo"):
            figures["demo"] = demo(work, model, args.rounds)
        if args.part in ("all", "facts"):
            figures["facts"] = facts(work, model, args.facts)
        if args.part in ("all", "lm-eval"):
            figures["lm_eval"] = lm_eval_ratio(work, model, args.facts, args.rounds)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
