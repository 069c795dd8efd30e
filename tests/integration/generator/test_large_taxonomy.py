"""A taxonomy of 2,100 leaves (labtune_dev.template_taxonomy) through `labtune taxonomy sync` as the
Taxonomy pod runs it, over https from a git server on loopback: the termination summary fits the
kubelet's 4 KiB with exact counts, the manifest on the artifact volume holds every leaf and every
error; `labtune taxonomy diff` finds the same changed leaves; a run sharded 8 ways over 2,000 leaves
plans its split."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from labtune.contract.common import SUMMARY_LIMIT_BYTES, resolve_artifact
from labtune.contract.generate import GenerateConfig
from labtune.contract.taxonomy_sync import LeafManifest, TaxonomySyncSummary
from labtune.generator.shards import ShardPlan
from labtune_dev.template_taxonomy import (
    BASE_BRANCH,
    INVALID_VERSION,
    LABTUNE,
    TaxonomyShape,
    make_taxonomy,
    publish,
    sync_command,
    sync_config,
)

if TYPE_CHECKING:
    from labtune_dev.gitserver import GitServer

# More errors and changed leaves than the Taxonomy's status holds (50 and 256).
SHAPE = TaxonomyShape(leaves=2100, added=100, edited=200, invalid=80)


def test_a_2100_leaf_taxonomy_syncs_validates_and_diffs(git_server: GitServer, tmp_path: Path) -> None:
    taxonomy = make_taxonomy(tmp_path / "repos", SHAPE, documents_url=f"{git_server.url}/documents.git")
    publish(taxonomy, git_server.root)
    config = sync_config(git_server, tmp_path)

    run = subprocess.run(sync_command(config, tmp_path), capture_output=True, text=True)

    assert run.returncode == 0, run.stderr
    text = Path(config.termination_log).read_bytes()
    assert len(text) <= SUMMARY_LIMIT_BYTES
    summary = TaxonomySyncSummary.model_validate_json(text)
    assert summary.commit == taxonomy.commit
    assert summary.leaf_counts == taxonomy.counts()
    assert summary.leaf_counts.total == SHAPE.leaves
    assert summary.changed_leaf_count == len(taxonomy.changed) == SHAPE.added + SHAPE.edited
    assert summary.error_count == len(taxonomy.invalid) == SHAPE.invalid
    assert summary.warning_count == 0
    # The lists are the first ones, cut to fit; the counts stay exact.
    assert summary.changed_leaves == taxonomy.changed[: len(summary.changed_leaves)]
    assert [e.path for e in summary.errors] == taxonomy.invalid[: len(summary.errors)]
    assert summary.changed_leaves
    assert summary.errors
    assert summary.manifest == config.manifest

    manifest = LeafManifest.model_validate_json(
        resolve_artifact(config.manifest, config.artifact_root).read_text()
    )
    assert manifest.commit == taxonomy.commit
    assert manifest.leaf_counts == taxonomy.counts()
    assert {leaf.path: leaf.leaf_type for leaf in manifest.leaves} == taxonomy.leaves
    assert sorted(leaf.path for leaf in manifest.leaves if leaf.changed) == taxonomy.changed
    errors = {leaf.path: leaf.errors for leaf in manifest.leaves if leaf.errors}
    assert sorted(errors) == taxonomy.invalid
    assert all(len(issues) == 1 for issues in errors.values())
    assert all(f"version {INVALID_VERSION} is not supported" in i[0].message for i in errors.values())

    diff = subprocess.run(
        [LABTUNE, "taxonomy", "diff", str(taxonomy.root), "--base", BASE_BRANCH],
        capture_output=True,
        text=True,
        check=True,
    )
    assert diff.stdout.split() == taxonomy.changed


def _peak_rss_mb(process: subprocess.Popen[bytes]) -> float:
    """The process's high-water RSS (VmHWM), read until it exits. Not ru_maxrss from wait4: until
    its exec the child is a fork of this test process (a model loaded by an earlier test makes that
    gigabytes), and Linux keeps that figure as the child's maximum."""
    status, peak = Path(f"/proc/{process.pid}/status"), 0
    while process.poll() is None:
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except OSError:
            break  # exited between the poll and the read
        if fields.get("Name", "").strip() == "labtune" and "VmHWM" in fields:  # after the exec
            peak = max(peak, int(fields["VmHWM"].split()[0]))
        time.sleep(0.05)
    return peak / 1024


def test_a_sharded_run_over_2000_leaves_plans_its_split(tmp_path: Path) -> None:
    """`labtune generate --plan` (what every shard computes before it generates) over 2,000 leaves in
    8 shards: every leaf in exactly one shard, the expected work balanced, in bounded time and
    memory (one leaf's documents at a time)."""
    taxonomy = make_taxonomy(tmp_path / "repos", TaxonomyShape(leaves=2000, added=1, edited=0))
    config = GenerateConfig.model_validate(
        {
            "taxonomy": {"url": str(taxonomy.root), "commit": taxonomy.commit},
            "leaves": "all",
            "teacher": {"backend": "openai", "model": "teacher", "url": "http://127.0.0.1:1/v1"},
            "output": str(tmp_path / "datasets"),
            "shards": 8,
        }
    )
    path = tmp_path / "generate.json"
    path.write_text(config.model_dump_json(by_alias=True))

    started = time.perf_counter()
    with (tmp_path / "plan.json").open("w") as out:
        process = subprocess.Popen([LABTUNE, "generate", "--config", str(path), "--plan"], stdout=out)
        peak_mb = _peak_rss_mb(process)
    seconds = time.perf_counter() - started
    print(f"planned 2,000 leaves in 8 shards in {seconds:.1f}s, peak RSS {peak_mb:.0f} MB")
    assert process.wait() == 0
    plan = ShardPlan.model_validate_json((tmp_path / "plan.json").read_text())
    assigned = [leaf for shard in plan.shards for leaf in shard.leaves]
    assert sorted(assigned) == sorted(taxonomy.leaves)  # each once
    works = [shard.work for shard in plan.shards]
    assert sum(works) == plan.work
    assert max(works) - min(works) <= max(works) * 0.02, works  # balanced to 2 %
    assert 0 < peak_mb < 500
