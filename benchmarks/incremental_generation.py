"""Incremental generation: what a second SyntheticDataRun costs when one leaf of a 10-leaf taxonomy
changed, with the leaf cache (spec.cache, policy Reuse) against the first run from an empty cache.

The taxonomy: the demo's three leaves (the Veltrane knowledge leaf with its document, two skills)
and seven freeform skill leaves made from a template, in real git repositories. The teacher:
SmolLM2-135M-Instruct on llama.cpp's OpenAI-compatible server, which answers one request at a
time with the request's seed, so its replies do not depend on what else runs (deterministic). The
packaged `small-teacher` pipeline, one sample per seed, one seed example held back per leaf.

Each round starts from an empty cache: run 1 generates every leaf at commit A; one seed question of
one skill leaf changes (commit B); run 2 generates at commit B with the cache. Printed per round:
teacher tokens and wall time of run 2 as a fraction of run 1 (targets: both <= 15 %); the median of
the rounds counts. Last, a run at commit B without the cache, from scratch: its datasets must be
byte-identical to run 2's.

    python benchmarks/incremental_generation.py [--rounds 3] [--samples-per-seed 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from labtune.contract.generate import GenerateConfig, GenerateSummary
from labtune.generator.pipeline import packaged_path
from labtune.generator.run import generate
from labtune_dev.llama import llama_server
from labtune_dev.models import smollm2_gguf
from labtune_dev.template_taxonomy import commit_all, git, new_repo

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples/demo"
DATASETS = ("knowledge.jsonl", "skills.jsonl", "evaluation.jsonl")
TOPICS = ("bread", "bicycles", "libraries", "bees", "trains", "coffee", "bridges")
CHANGED = "compositional_skills/writing/slogans/bees/qna.yaml"
TARGET = 0.15


def _slogan_leaf(topic: str) -> str:
    examples = "".join(
        f"  - question: Write a one-line slogan about {topic} for {audience}.\n"
        f'    answer: "{topic.capitalize()} for {audience}: small things, done well, every day."\n'
        for audience in ("children", "a city", "a shop", "a school", "a club")
    )
    return (
        f"version: 3\ncreated_by: labtune-benchmark\ntask_description: Write slogans about {topic}.\n"
        f"seed_examples:\n{examples}"
    )


def make_taxonomy(where: Path) -> Path:
    """The 10-leaf taxonomy repository (commit A checked in); the document is in a second one."""
    documents = new_repo(where / "documents")
    (documents / "veltrane.md").write_text((DEMO / "documents/veltrane.md").read_text())
    document_commit = commit_all(documents, "documents")
    root = new_repo(where / "taxonomy")
    for leaf in sorted((DEMO / "taxonomy").rglob("qna.yaml")):
        target = root / leaf.relative_to(DEMO / "taxonomy")
        target.parent.mkdir(parents=True, exist_ok=True)
        text = leaf.read_text().replace("DOCUMENT_REPO", str(documents))
        target.write_text(text.replace("DOCUMENT_COMMIT", document_commit))
    for topic in TOPICS:
        leaf = root / f"compositional_skills/writing/slogans/{topic}/qna.yaml"
        leaf.parent.mkdir(parents=True)
        leaf.write_text(_slogan_leaf(topic))
    commit_all(root, "ten leaves")
    return root


def change_one_leaf(root: Path) -> str:
    leaf = root / CHANGED
    leaf.write_text(leaf.read_text().replace("about bees for a club.", "about bees for a beekeeping club."))
    return commit_all(root, "one leaf changes")


def config(root: Path, commit: str, url: str, out: Path, cache: Path | None, spp: int) -> GenerateConfig:
    data: dict[str, Any] = {
        "taxonomy": {"url": str(root), "commit": commit},
        "leaves": "all",
        "teacher": {"backend": "openai", "model": "smollm2", "url": url, "maxConcurrency": 4},
        "pipeline": {"path": str(packaged_path("small-teacher"))},
        "scale": {"samplesPerSeed": spp, "chunkTokens": 256, "seed": 3},
        "evaluation": {"heldOutSeeds": 1},
        "output": str(out),
        "metricsPort": 0,
    }
    if cache is not None:
        data["cache"] = {"uri": str(cache)}
    return GenerateConfig.model_validate(data)


def timed(run: GenerateConfig) -> tuple[GenerateSummary, float]:
    started = time.monotonic()
    summary = generate(run)
    return summary, time.monotonic() - started


def tokens(summary: GenerateSummary) -> int:
    return summary.cost.prompt_tokens + summary.cost.completion_tokens


def files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in DATASETS}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples-per-seed", type=int, default=1)
    args = parser.parse_args()
    spp = args.samples_per_seed
    with tempfile.TemporaryDirectory() as folder:
        where = Path(folder)
        with llama_server(smollm2_gguf(), where / "server.log") as url:
            token_ratios, wall_ratios = [], []
            for number in range(1, args.rounds + 1):
                rounds = where / f"round-{number}"
                root = make_taxonomy(rounds / "repos")
                first, first_s = timed(
                    config(root, git(root, "rev-parse", "HEAD"), url, rounds / "a", rounds / "cache", spp)
                )
                commit = change_one_leaf(root)
                second, second_s = timed(config(root, commit, url, rounds / "b", rounds / "cache", spp))
                assert second.cost.leaves_generated == 1, second.cost
                token_ratios.append(tokens(second) / tokens(first))
                wall_ratios.append(second_s / first_s)
                print(
                    f"round {number}: run 1 {first.cost.leaves_generated} leaves, {tokens(first)} tokens, "
                    f"{first_s:.1f} s; run 2 {second.cost.leaves_generated} generated + "
                    f"{second.cost.leaves_reused} reused, {tokens(second)} tokens, {second_s:.1f} s; "
                    f"tokens {token_ratios[-1]:.1%}, wall {wall_ratios[-1]:.1%}"
                )
            scratch, scratch_s = timed(config(root, commit, url, where / "scratch", None, spp))
            identical = files(where / "scratch") == files(rounds / "b")
    token_ratio, wall_ratio = statistics.median(token_ratios), statistics.median(wall_ratios)
    cost = scratch.cost
    print(
        f"from scratch, commit B: {cost.leaves_generated} leaves, {tokens(scratch)} tokens, {scratch_s:.0f}s"
    )
    ratios = f"teacher tokens {token_ratio:.1%}, wall time {wall_ratio:.1%}"
    print(f"median of {args.rounds} rounds: {ratios} (target <= {TARGET:.0%})")
    print(f"datasets of run 2 byte-identical to the run from scratch: {'yes' if identical else 'NO'}")
    if not identical or token_ratio > TARGET or wall_ratio > TARGET:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
