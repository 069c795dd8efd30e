"""Changed leaves (`ilab taxonomy diff` semantics), bounded clones and the sync pod, on real git
repositories in temporary folders."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from labtune.contract import SUMMARY_LIMIT_BYTES, write_summary
from labtune.contract.taxonomy_sync import GitCheckout, LeafManifest, TaxonomySyncConfig
from labtune.generator import gitrepo
from labtune.generator.sync import sync
from labtune.generator.taxonomy_scan import scan

if TYPE_CHECKING:
    from conftest import Git, SampleTaxonomy

SKILL = "compositional_skills/writing/haiku/qna.yaml"
NEW = "compositional_skills/writing/limerick/qna.yaml"


def _branch_with_changes(taxonomy: SampleTaxonomy, git: type[Git]) -> None:
    """On a branch off main: a new leaf committed, an edited leaf uncommitted, an untracked leaf,
    a deleted leaf, and a non-leaf file."""
    root = taxonomy.root
    git.run(root, "checkout", "--quiet", "-b", "feature")
    (root / NEW).parent.mkdir(parents=True)
    (root / NEW).write_text((root / SKILL).read_text().replace("haiku", "limerick"))
    git.commit_all(root, "add limerick")
    (root / SKILL).write_text((root / SKILL).read_text().replace("the sea", "the ocean"))
    untracked = root / "compositional_skills/writing/sonnet/qna.yaml"
    untracked.parent.mkdir(parents=True)
    untracked.write_text((root / SKILL).read_text())
    git.run(root, "rm", "--quiet", "compositional_skills/extraction/capitals/qna.yaml")
    (root / "README.md").write_text("not a leaf\n")


def test_empty_base_means_every_leaf(sample_taxonomy: SampleTaxonomy) -> None:
    result = scan(sample_taxonomy.root, base="empty")
    assert result.changed == result.leaves
    assert len(result.leaves) == 3


def test_changed_leaves_since_the_merge_base(sample_taxonomy: SampleTaxonomy, git: type[Git]) -> None:
    root = sample_taxonomy.root
    # main moves on after the branch point: its later changes must not count.
    git.run(root, "checkout", "--quiet", "-b", "later-main")
    (root / "knowledge/astronomy/sun/qna.yaml").write_text("version: 3\n")
    git.commit_all(root, "later change on main")
    git.run(root, "checkout", "--quiet", "main")
    _branch_with_changes(sample_taxonomy, git)
    git.run(root, "branch", "--quiet", "--force", "main", "later-main")
    result = scan(root, base="main", validate="changed")
    assert result.changed == [SKILL, NEW, "compositional_skills/writing/sonnet/qna.yaml"]
    assert [f.path for f in result.report.files] == result.changed
    assert result.report.error_count == 0


def test_unknown_base_is_a_clear_error(sample_taxonomy: SampleTaxonomy) -> None:
    with pytest.raises(gitrepo.GitError, match="cannot find the taxonomy base ref 'origin/nope'"):
        scan(sample_taxonomy.root, base="origin/nope")


def test_clone_pins_branch_tag_and_commits(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, git: type[Git]
) -> None:
    root = sample_taxonomy.root
    git.run(root, "tag", "v1")
    later = git.commit_all(root, "later")
    url = f"file://{root}"
    cases = {
        "branch": (GitCheckout(url=url, branch="main"), later),
        "tag": (GitCheckout(url=url, tag="v1"), sample_taxonomy.commit),
        "commit": (GitCheckout(url=url, commit=sample_taxonomy.commit), sample_taxonomy.commit),
        "short": (GitCheckout(url=url, commit=sample_taxonomy.commit[:8]), sample_taxonomy.commit),
        "default": (GitCheckout(url=url), later),
    }
    for name, (checkout, expected) in cases.items():
        assert gitrepo.clone(checkout, tmp_path / name) == expected, name
    # Depth 1 when no diff base is needed.
    assert git.run(tmp_path / "branch", "rev-list", "--count", "HEAD") == "1"


def test_clone_skips_submodules(sample_taxonomy: SampleTaxonomy, tmp_path: Path, git: type[Git]) -> None:
    root, documents = sample_taxonomy.root, str(sample_taxonomy.documents)
    git.run(
        root, "-c", "protocol.file.allow=always", "submodule", "add", "--quiet", documents, "vendor/documents"
    )
    git.commit_all(root, "submodule")
    gitrepo.clone(GitCheckout(url=str(sample_taxonomy.root)), tmp_path / "clone")
    assert (tmp_path / "clone/.gitmodules").is_file()
    assert not any((tmp_path / "clone/vendor/documents").iterdir())


def test_clone_bounds(sample_taxonomy: SampleTaxonomy, tmp_path: Path) -> None:
    url = f"file://{sample_taxonomy.root}"
    with pytest.raises(gitrepo.GitError, match="exceeds the 1000 byte limit"):
        gitrepo.clone(GitCheckout(url=url, max_bytes=1000), tmp_path / "small")
    with pytest.raises(gitrepo.GitError, match="cannot fetch branch nope"):
        gitrepo.clone(GitCheckout(url=url, branch="nope"), tmp_path / "missing")
    with pytest.raises(gitrepo.GitError, match="cannot fetch"):
        gitrepo.clone(GitCheckout(url="ext::sh -c touch% /tmp/pwned"), tmp_path / "ext")


def test_sync_writes_manifest_and_a_small_summary(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, git: type[Git]
) -> None:
    root = sample_taxonomy.root
    git.run(root, "checkout", "--quiet", "-b", "feature")
    # Many broken leaves: the summary must still fit the termination log, counts stay exact.
    for i in range(60):
        path = root / f"compositional_skills/broken/leaf{i:02d}/qna.yaml"
        path.parent.mkdir(parents=True)
        path.write_text("version: 3\ncreated_by: x   \ntask_description: broken\nseed_examples: []\n")
    git.commit_all(root, "broken leaves")
    config = TaxonomySyncConfig(
        git=GitCheckout(url=str(root), branch="feature"),
        base="origin/main",
        manifest="pvc://artifacts/taxonomies/sample/manifest.json",
        artifact_root=str(tmp_path / "mnt"),
    )
    summary = sync(config)
    assert summary.commit == git.run(root, "rev-parse", "feature")
    assert summary.leaf_counts.total == 63
    assert (summary.leaf_counts.knowledge, summary.leaf_counts.grounded_skills) == (1, 1)
    assert summary.changed_leaf_count == 60
    assert summary.error_count == 120  # trailing spaces + too few seed examples, per leaf
    assert 0 < len(summary.errors) <= 50
    assert summary.errors[0].line == 2
    text = write_summary(summary, tmp_path / "termination-log")
    assert len(text.encode()) <= SUMMARY_LIMIT_BYTES
    manifest = LeafManifest.model_validate_json(
        (tmp_path / "mnt/artifacts/taxonomies/sample/manifest.json").read_text()
    )
    assert len(manifest.leaves) == 63
    assert sum(len(leaf.errors) for leaf in manifest.leaves) == 120
    assert sum(leaf.changed for leaf in manifest.leaves) == 60


def test_credentials_never_reach_the_command_line(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "username").write_text("user")
    (creds / "password").write_text("s3cret")
    (creds / "ssh-privatekey").write_text("KEY")
    env = gitrepo._credential_env(GitCheckout(url="https://x", credentials_dir=str(creds)), tmp_path)
    assert "s3cret" not in json.dumps(env)
    assert "StrictHostKeyChecking=accept-new" in env["GIT_SSH_COMMAND"]
    askpass = Path(env["GIT_ASKPASS"])

    def ask(prompt: str) -> str:
        environment = {**env, "PATH": "/usr/bin:/bin"}
        return subprocess.run([askpass, prompt], capture_output=True, text=True, env=environment).stdout

    assert ask("Username for 'https://x': ") == "user"
    assert ask("Password for 'https://user@x': ") == "s3cret"
    key = Path(env["GIT_SSH_COMMAND"].split()[2])
    assert key.stat().st_mode & 0o777 == 0o600


def test_clone_time_bound(tmp_path: Path) -> None:
    # A server that accepts the connection and never answers: git waits until the deadline.
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"https://127.0.0.1:{server.getsockname()[1]}/taxonomy.git"
        with pytest.raises(gitrepo.GitError, match="git took longer than 1s"):
            gitrepo.clone(GitCheckout(url=url, timeout_seconds=1), tmp_path / "slow")
