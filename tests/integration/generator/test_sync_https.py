"""`labtune taxonomy sync` as the Taxonomy pod runs it, against an https git server on loopback
with a private CA and basic-auth credentials mounted as files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from labtune.contract import EXIT_CONFIG_ERROR

if TYPE_CHECKING:
    from labtune_dev.gitserver import GitServer
    from tests.unit.generator.conftest import Git, SampleTaxonomy

LABTUNE = str(Path(sys.executable).parent / "labtune")
NEW_LEAF = "compositional_skills/writing/limerick/qna.yaml"


def _sync(tmp_path: Path, git: dict[str, object]) -> tuple[subprocess.CompletedProcess[str], Path]:
    config = tmp_path / "sync.yaml"
    log = tmp_path / "termination-log"
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "TaxonomySync",
                "git": git,
                "base": "origin/main",
                "manifest": "pvc://artifacts/taxonomies/demo/manifest.json",
                "artifactRoot": str(tmp_path / "mnt"),
                "terminationLog": str(log),
                "metricsPort": 0,
            }
        )
    )
    run = subprocess.run(
        [LABTUNE, "taxonomy", "sync", "--config", str(config)], capture_output=True, text=True
    )
    return run, log


def test_sync_over_https(
    sample_taxonomy: SampleTaxonomy, git_server: GitServer, git: type[Git], tmp_path: Path
) -> None:
    root = sample_taxonomy.root
    git.run(root, "checkout", "--quiet", "-b", "feature")
    (root / NEW_LEAF).parent.mkdir(parents=True)
    (root / NEW_LEAF).write_text(
        (root / "compositional_skills/writing/haiku/qna.yaml").read_text().replace("haiku", "limerick")
    )
    feature = git.commit_all(root, "limerick")
    bare = git_server.root / "taxonomy.git"
    git.run(tmp_path, "clone", "--quiet", "--mirror", str(root), str(bare))
    git.run(bare, "config", "uploadpack.allowFilter", "true")
    credentials = git_server.credentials(tmp_path / "secret")
    checkout = {
        "url": f"{git_server.url}/taxonomy.git",
        "branch": "feature",
        "credentialsDir": str(credentials),
        "caFile": str(git_server.ca),
    }

    run, log = _sync(tmp_path, checkout)
    assert run.returncode == 0, run.stderr
    summary = json.loads(log.read_text())
    assert summary["commit"] == feature
    assert summary["leafCounts"]["total"] == 4
    assert summary["changedLeaves"] == [NEW_LEAF]
    assert summary["errorCount"] == 0
    manifest = json.loads((tmp_path / "mnt/artifacts/taxonomies/demo/manifest.json").read_text())
    assert {leaf["path"] for leaf in manifest["leaves"] if leaf["changed"]} == {NEW_LEAF}

    (credentials / "password").write_text("wrong")
    run, _ = _sync(tmp_path, checkout)
    assert run.returncode == EXIT_CONFIG_ERROR  # retrying cannot help: the Job fails at once
    assert run.stderr.strip().splitlines()[-1].startswith("error: cannot fetch branch feature from https://")
    assert "Authentication failed" in run.stderr

    (credentials / "password").write_text(git_server.password)
    run, _ = _sync(tmp_path, {**checkout, "caFile": None})
    assert run.returncode == EXIT_CONFIG_ERROR  # retrying cannot help: the Job fails at once
    assert "certificate" in run.stderr.lower()

    # The CA may also come in the git Secret as `ca.crt` (Flux's convention): the Taxonomy's Secret
    # is mounted as credentialsDir, and the operator never reads it to find out.
    (credentials / "ca.crt").write_bytes(git_server.ca.read_bytes())
    run, log = _sync(tmp_path, {**checkout, "caFile": None})
    assert run.returncode == 0, run.stderr
    assert json.loads(log.read_text())["commit"] == feature
