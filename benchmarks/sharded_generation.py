"""Sharded generation (SyntheticDataRun `parallelism`) against an endpoint with spare capacity.

What one generator pod can do is bounded by its client's concurrency (`scale.maxConcurrency`)
when the endpoint could take more: a large inference service. The endpoint here stands in for
one: an OpenAI-compatible server on loopback that answers every request after a fixed delay, a
thread per request, so it never queues. The taxonomy is made from the demo's three leaf kinds
(labtune_dev.template_taxonomy), the pipeline is `small-teacher`.

In alternating pairs, one `labtune generate` process (parallelism 1) against two
`labtune generate --shard` processes at once followed by `labtune generate --mix`
(parallelism 2), each process as a pod runs it, timed from the first process's start to the
datasets written. Prints each pair, the median speed-up (target >= 1.8) and whether the two
wrote the same datasets (they must).

    python benchmarks/sharded_generation.py [--leaves 60] [--delay 0.5] [--concurrency 4] [--pairs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from labtune.generator.pipeline import packaged_path
from labtune_dev.openai_server import serve
from labtune_dev.template_taxonomy import TaxonomyShape, make_taxonomy

LABTUNE = str(Path(sys.executable).parent / "labtune")
DATASETS = ("knowledge.jsonl", "skills.jsonl")


def reply(prompt: str) -> str:
    """A short answer that depends on the prompt only, as a greedy teacher's does."""
    return f"Answer {hashlib.sha256(prompt.encode()).hexdigest()[:12]}."


def write_config(folder: Path, root: Path, commit: str, url: str, concurrency: int, shards: int) -> Path:
    config = {
        "taxonomy": {"url": str(root), "commit": commit},
        "leaves": "all",
        "teacher": {"backend": "openai", "url": url, "model": "teacher", "maxConcurrency": concurrency},
        "pipeline": {"path": str(packaged_path("small-teacher"))},
        "scale": {"samplesPerSeed": 2, "chunkTokens": 256, "seed": 1},
        "output": str(folder / "datasets"),
        "metricsPort": 0,
        "terminationLog": str(folder / "termination-log"),
        "shards": shards,
    }
    folder.mkdir(parents=True)
    path = folder / "generate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def at_once(commands: list[list[str]], folder: Path, name: str) -> None:
    """Runs the processes side by side and waits for all. Their logs go to files: a pipe not read
    while another process is waited for fills up and stalls the one writing to it (it cost one
    shard 10 s in a first version of this benchmark)."""
    processes, logs = [], [folder / f"{name}-{i}.log" for i in range(len(commands))]
    for command, log in zip(commands, logs, strict=True):
        with log.open("wb") as stderr:
            processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr))
    for process, log in zip(processes, logs, strict=True):
        if process.wait() != 0:
            raise RuntimeError(f"labtune generate failed: {log.read_text()[-2000:]}")


def run(config: Path, shards: int) -> tuple[float, float]:
    """Seconds from the first process's start until the datasets are written, and of those the
    mix step's."""
    command, folder = [LABTUNE, "generate", "--config", str(config)], config.parent
    started = time.perf_counter()
    if shards == 1:
        at_once([command], folder, "one-pod")
        return time.perf_counter() - started, 0.0
    at_once([[*command, "--shard", str(i)] for i in range(shards)], folder, "shard")
    mixing = time.perf_counter()
    at_once([[*command, "--mix"]], folder, "mix")
    return time.perf_counter() - started, time.perf_counter() - mixing


def datasets(config: Path) -> dict[str, bytes]:
    return {name: (config.parent / "datasets" / name).read_bytes() for name in DATASETS}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--leaves", type=int, default=60)
    parser.add_argument("--delay", type=float, default=0.5, help="the endpoint's seconds per request")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight per pod")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="labtune-sharded-") as workdir,
        serve(reply=reply) as (url, script),
    ):
        script.delay = args.delay
        where = Path(workdir)
        taxonomy = make_taxonomy(where / "repos", TaxonomyShape(leaves=args.leaves, added=1, edited=0))
        speedups, same = [], True
        for pair in range(args.pairs):
            seconds = {}
            for shards in (1, 2) if pair % 2 == 0 else (2, 1):
                folder = where / f"pair-{pair}-parallelism-{shards}"
                config = write_config(folder, taxonomy.root, taxonomy.commit, url, args.concurrency, shards)
                seconds[shards], mixing = run(config, shards)
                if shards == 2:
                    split, mix = datasets(config), mixing
                else:
                    single = datasets(config)
            same = same and split == single
            speedups.append(seconds[1] / seconds[2])
            print(
                f"pair {pair + 1}: parallelism 1 {seconds[1]:.1f}s, parallelism 2 {seconds[2]:.1f}s "
                f"(two shards, then the mix: {mix:.1f}s): speed-up {speedups[-1]:.2f}"
            )
        requests = len(script.calls) // (2 * args.pairs)
    print(
        f"{args.leaves} leaves, {requests} teacher requests a run, {args.delay:g}s each at the endpoint, "
        f"{args.concurrency} in flight per pod"
    )
    print(f"speed-up at parallelism 2: median {statistics.median(speedups):.2f} (target >= 1.8)")
    print(f"datasets the same bytes at parallelism 1 and 2: {same}")


if __name__ == "__main__":
    main()
