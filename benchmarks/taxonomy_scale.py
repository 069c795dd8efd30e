"""Taxonomy sync and validation at scale: wall time and peak RSS of `labtune taxonomy sync --config`
(the Taxonomy pod: clone over https, diff against the base, validate every leaf, probe the
documents' repository, write the leaf manifest and the termination summary) and of `labtune taxonomy
validate --base empty` (every leaf of a checkout, as a contributor's CI runs it).

The taxonomy: labtune_dev.template_taxonomy's, 2,000 leaves by default (a third each knowledge,
freeform and grounded skills, from the demo's three leaves), served by an https git server on
loopback (private CA, basic auth); the synced branch adds 100 leaves and edits 200 of its base's.
Each command runs --rounds times as a child process; the figures are the medians of its wall
seconds and of its peak RSS (ru_maxrss from os.wait4: the largest single process of the child's
tree, git's processes included). Targets: each command <= 60 s and <= 500 MB, the summary within
the kubelet's 4 KiB; the script exits 1 when one is missed.

    python benchmarks/taxonomy_scale.py [--leaves 2000] [--invalid 0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from labtune.contract.common import SUMMARY_LIMIT_BYTES, resolve_artifact
from labtune_dev.gitserver import git_server
from labtune_dev.template_taxonomy import (
    LABTUNE,
    TaxonomyShape,
    make_taxonomy,
    publish,
    sync_command,
    sync_config,
)

TARGET_SECONDS = 60.0
TARGET_BYTES = 500 * 10**6


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_bytes: int


def measured(argv: list[str], expected: int) -> Measured:
    """Runs `argv` to its end; its wall time and peak RSS. Another exit status than `expected`
    stops the benchmark with the command's stderr."""
    with tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if process.returncode != expected:
            stderr.seek(0)
            raise SystemExit(f"{argv[1:3]} exited {process.returncode}: {stderr.read()[-2000:].decode()}")
    return Measured(seconds, usage.ru_maxrss * 1024)  # Linux counts ru_maxrss in KiB


def report(name: str, runs: list[Measured]) -> bool:
    """Prints the medians against the targets; whether both are met."""
    seconds = statistics.median(r.seconds for r in runs)
    peak = statistics.median(r.peak_bytes for r in runs)
    rounds = " ".join(f"{r.seconds:.1f}" for r in runs)
    print(
        f"{name}: {seconds:.1f} s ({rounds}; target <= {TARGET_SECONDS:.0f} s), "
        f"peak RSS {peak / 10**6:.0f} MB (target <= {TARGET_BYTES / 10**6:.0f} MB)"
    )
    return seconds <= TARGET_SECONDS and peak <= TARGET_BYTES


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leaves", type=int, default=2000)
    parser.add_argument("--invalid", type=int, default=0, help="leaves with one validation error each")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shape = TaxonomyShape(leaves=args.leaves, added=100, edited=200, invalid=args.invalid)
    expected = 1 if args.invalid else 0  # validate exits 1 when it finds an error; sync does not
    with tempfile.TemporaryDirectory() as folder:
        where = Path(folder)
        served = where / "served"
        served.mkdir()
        with git_server(served, where / "tls") as server:
            started = time.monotonic()
            taxonomy = make_taxonomy(where / "repos", shape, documents_url=f"{server.url}/documents.git")
            publish(taxonomy, served)
            print(f"{shape.leaves} leaves in git in {time.monotonic() - started:.1f} s: {taxonomy.counts()}")
            config = sync_config(server, where)
            syncs = [measured(sync_command(config, where), 0) for _ in range(args.rounds)]
            summary = Path(config.termination_log).stat().st_size
            manifest = resolve_artifact(config.manifest, config.artifact_root).stat().st_size
        validate = [LABTUNE, "taxonomy", "validate", "--base", "empty", str(taxonomy.root)]
        validates = [measured(validate, expected) for _ in range(args.rounds)]
    met = [
        report("labtune taxonomy sync", syncs),
        report("labtune taxonomy validate", validates),
        summary <= SUMMARY_LIMIT_BYTES,
    ]
    print(f"summary {summary} bytes (limit {SUMMARY_LIMIT_BYTES}), leaf manifest {manifest / 10**6:.2f} MB")
    if not all(met):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
