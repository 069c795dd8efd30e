"""Generator throughput, measured in one run on the same prompts:

- the pipeline's output tokens/s (a generate block run by the pipeline engine) against raw
  batched generation with the same backend: transformers `generate` in batches on CPU, and
  llama.cpp's OpenAI-compatible server driven by a plain `openai` client at the same concurrency;
- samples/minute of `labtune generate` on the demo taxonomy (tests/unit/generator/data) with
  the transformers backend, SmolLM2-135M-Instruct and the `small-teacher` pipeline.

Greedy decoding, so both sides produce the same tokens. After a warm-up of each side, rounds
run raw and pipeline back to back in alternating order; the median of the per-round ratios counts
(the machine is shared, and its speed drifts by 15% between minutes).

    python benchmarks/generator_throughput.py [--backend all|transformers|llama-cpp] [--prompts 32]
        [--max-tokens 64] [--batch-size 8] [--concurrency 4] [--rounds 5] [--skip-demo]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
from generator_testdata import generator_testdata

from labtune.contract.generate import TeacherConfig
from labtune.generator.engine import Engine
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.parsers import TextParser
from labtune.generator.pipeline import GenerateBlock, packaged_path
from labtune.generator.run import generate
from labtune.generator.teacher import Teacher
from labtune.generator.teacher_openai import OpenAITeacher
from labtune.generator.teacher_transformers import TransformersTeacher
from labtune_dev.llama import llama_server
from labtune_dev.models import smollm2_gguf

TOPICS = [
    "the sea",
    "rain",
    "mountains",
    "bread",
    "bicycles",
    "libraries",
    "bees",
    "winter",
    "trains",
    "coffee",
    "volcanoes",
    "chess",
    "gardens",
    "the moon",
    "bridges",
    "music",
    "deserts",
    "owls",
    "maps",
    "glass",
    "rivers",
    "clocks",
    "salt",
    "kites",
    "forests",
    "paper",
    "storms",
    "islands",
    "lighthouses",
    "wool",
    "comets",
    "markets",
]


def prompts(count: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} (#{i})." for i in range(count)]


def pipeline_block(max_tokens: int) -> GenerateBlock:
    return GenerateBlock(
        type="generate",
        name="generate",
        prompt="{{ prompt }}",
        temperature=0.0,
        max_tokens=max_tokens,
        parser=TextParser(type="text", field="text"),
    )


async def pipeline_tokens(
    teacher: Teacher, metrics: GeneratorMetrics, texts: list[str], max_tokens: int
) -> int:
    """Runs the prompts through the pipeline engine; returns the output tokens it counted."""
    before = (
        metrics.registry.get_sample_value("labtune_generator_teacher_tokens_total", {"direction": "out"}) or 0
    )
    engine = Engine(teacher, metrics, system=None, seed=0, samples_per_seed=1)
    await engine.run(pipeline_block(max_tokens), [{"prompt": t} for t in texts], salt="benchmark")
    after = (
        metrics.registry.get_sample_value("labtune_generator_teacher_tokens_total", {"direction": "out"}) or 0
    )
    return int(after - before)


def raw_transformers(teacher: TransformersTeacher, texts: list[str], max_tokens: int, batch_size: int) -> int:
    """Plain batched `generate`: chat template, left padding, batches sorted by length."""
    import torch

    tokenizer, model = teacher.tokenizer, teacher.model
    rendered = sorted(
        (
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
            )
            for t in texts
        ),
        key=len,
    )
    tokens = 0
    for start in range(0, len(rendered), batch_size):
        encoded = tokenizer(
            rendered[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        for row in output[:, encoded["input_ids"].shape[1] :]:
            stop = (row == tokenizer.eos_token_id).nonzero()
            tokens += int(stop[0]) if len(stop) else len(row)
    return tokens


async def raw_openai(url: str, model: str, texts: list[str], max_tokens: int, concurrency: int) -> int:
    """A plain `openai` client with the same concurrency."""
    client = openai.AsyncOpenAI(base_url=url, api_key="unused")
    slots = asyncio.Semaphore(concurrency)

    async def one(text: str, seed: int) -> int:
        async with slots:
            reply = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": text}],
                max_tokens=max_tokens,
                temperature=0.0,
                seed=seed,
            )
            return reply.usage.completion_tokens if reply.usage else 0

    try:
        return sum(await asyncio.gather(*(one(t, i) for i, t in enumerate(texts))))
    finally:
        await client.close()


def timed(run: Callable[[], int]) -> float:
    """Tokens per second of one run."""
    started = time.monotonic()
    tokens = run()
    return tokens / (time.monotonic() - started)


def compare(name: str, raw: Callable[[], int], pipeline: Callable[[], int], rounds: int) -> dict[str, Any]:
    """One untimed warm-up of each side, then `rounds` back-to-back pairs whose order alternates;
    the median of the per-pair ratios counts (a pair sees the same machine load, a median drops
    the odd disturbed pair)."""
    raw(), pipeline()
    raws, pipes = [], []
    for index in range(rounds):
        if index % 2:
            pipes.append(timed(pipeline))
            raws.append(timed(raw))
        else:
            raws.append(timed(raw))
            pipes.append(timed(pipeline))
    result = {
        "backend": name,
        "raw_tokens_per_s": statistics.median(raws),
        "pipeline_tokens_per_s": statistics.median(pipes),
        "ratio": statistics.median(p / r for p, r in zip(pipes, raws, strict=True)),
    }
    raw_rate, pipeline_rate = result["raw_tokens_per_s"], result["pipeline_tokens_per_s"]
    pairs = " ".join(f"{p / r:.2f}" for p, r in zip(pipes, raws, strict=True))
    print(
        f"{name:>12}: raw {raw_rate:7.1f} tok/s   pipeline {pipeline_rate:7.1f} tok/s   "
        f"ratio {result['ratio']:.2f} (median of pairs: {pairs})"
    )
    return result


def run_async(factory: Callable[[], Awaitable[int]]) -> Callable[[], int]:
    return lambda: asyncio.run(factory())  # type: ignore[arg-type]


def demo_samples_per_minute(teacher: TransformersTeacher, samples_per_seed: int) -> dict[str, Any]:
    module = generator_testdata()
    with tempfile.TemporaryDirectory() as folder:
        sample = module.make_sample_taxonomy(Path(folder) / "repos")
        config = module.generate_config(
            sample,
            Path(folder) / "out",
            pipeline={"path": str(packaged_path("small-teacher"))},
            scale={"samplesPerSeed": samples_per_seed, "chunkTokens": 256, "seed": 1},
            teacher={"backend": "transformers", "model": str(smollm2_gguf())},
        )
        started = time.monotonic()
        summary = generate(config, teacher=teacher)
        minutes = (time.monotonic() - started) / 60
    result = {
        "leaves": summary.leaves_done,
        "samples_generated": summary.samples_generated,
        "samples_kept": summary.samples_kept,
        "minutes": minutes,
        "kept_per_minute": summary.samples_kept / minutes,
    }
    kept = f"{summary.samples_kept} samples kept in {minutes:.2f} min"
    print(f"        demo: {summary.leaves_done} leaves, {kept} = {result['kept_per_minute']:.1f} samples/min")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["all", "transformers", "llama-cpp"], default="all")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples-per-seed", type=int, default=2)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    texts = prompts(args.prompts)
    model = smollm2_gguf()
    print(f"{len(texts)} prompts, {args.max_tokens} max tokens, greedy, SmolLM2-135M-Instruct")

    if args.backend in ("all", "transformers"):
        metrics = GeneratorMetrics()
        teacher = TransformersTeacher(model, batch_size=args.batch_size, metrics=metrics)
        compare(
            "transformers",
            lambda: raw_transformers(teacher, texts, args.max_tokens, args.batch_size),
            run_async(lambda: pipeline_tokens(teacher, metrics, texts, args.max_tokens)),
            args.rounds,
        )
        if not args.skip_demo:
            demo_samples_per_minute(teacher, args.samples_per_seed)

    if args.backend in ("all", "llama-cpp"):
        with tempfile.TemporaryDirectory() as folder, llama_server(model, Path(folder) / "server.log") as url:
            metrics = GeneratorMetrics()
            config = TeacherConfig(
                backend="openai", model="smollm2", url=url, max_concurrency=args.concurrency
            )

            async def through_pipeline() -> int:
                teacher = OpenAITeacher(config, metrics)
                try:
                    return await pipeline_tokens(teacher, metrics, texts, args.max_tokens)
                finally:
                    await teacher.aclose()

            compare(
                "llama.cpp",
                run_async(lambda: raw_openai(url, "smollm2", texts, args.max_tokens, args.concurrency)),
                run_async(through_pipeline),
                args.rounds,
            )


if __name__ == "__main__":
    main()
