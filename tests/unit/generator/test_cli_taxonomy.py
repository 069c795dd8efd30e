"""`labtune taxonomy validate|diff|sync` as a user runs them: output formats and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from click.testing import CliRunner

from labtune.cli import main
from labtune.contract import EXIT_CONFIG_ERROR, EXIT_FAILED

if TYPE_CHECKING:
    from conftest import Git, SampleTaxonomy

SKILL = "compositional_skills/writing/haiku/qna.yaml"


def _break(taxonomy: SampleTaxonomy) -> None:
    path = taxonomy.root / SKILL
    path.write_text(path.read_text().replace("created_by: labtune-tests", "created_by: labtune-tests  "))


def test_validate_valid_taxonomy(sample_taxonomy: SampleTaxonomy) -> None:
    result = CliRunner().invoke(main, ["taxonomy", "validate", str(sample_taxonomy.root)])
    assert result.exit_code == 0, result.output
    assert "3 file(s) checked: 0 error(s), 0 warning(s)" in result.output


def test_validate_text_format(sample_taxonomy: SampleTaxonomy) -> None:
    _break(sample_taxonomy)
    result = CliRunner().invoke(main, ["taxonomy", "validate", str(sample_taxonomy.root)])
    assert result.exit_code == EXIT_FAILED
    assert f"{SKILL}:2:26: error: trailing spaces (trailing-spaces)" in result.output


def test_validate_json_format(sample_taxonomy: SampleTaxonomy) -> None:
    _break(sample_taxonomy)
    result = CliRunner().invoke(main, ["taxonomy", "validate", str(sample_taxonomy.root), "--format", "json"])
    assert result.exit_code == EXIT_FAILED
    report = json.loads(result.stdout)
    files = {f["path"]: f for f in report["files"]}
    assert files[SKILL]["leaf_type"] == "freeform_skill"
    lint = {"line": 2, "column": 26, "message": "trailing spaces (trailing-spaces)"}
    assert files[SKILL]["errors"] == [lint]
    assert files["knowledge/astronomy/sun/qna.yaml"]["leaf_type"] == "knowledge"
    assert (report["errors"], report["warnings"]) == (1, 0)


def test_validate_github_format(sample_taxonomy: SampleTaxonomy, monkeypatch: pytest.MonkeyPatch) -> None:
    _break(sample_taxonomy)
    monkeypatch.chdir(sample_taxonomy.root)  # as in a taxonomy repository's CI job
    result = CliRunner().invoke(main, ["taxonomy", "validate", "--format", "github"])
    assert result.exit_code == EXIT_FAILED
    assert result.stdout.strip() == f"::error file={SKILL},line=2,col=26::trailing spaces (trailing-spaces)"


def test_validate_only_changed_leaves_against_a_base(sample_taxonomy: SampleTaxonomy, git: type[Git]) -> None:
    _break(sample_taxonomy)
    git.commit_all(sample_taxonomy.root, "broken on main")
    git.run(sample_taxonomy.root, "checkout", "--quiet", "-b", "feature")
    leaf = sample_taxonomy.root / "compositional_skills/writing/tanka/qna.yaml"
    leaf.parent.mkdir()
    leaf.write_text((sample_taxonomy.root / SKILL).read_text().replace("  \n", "\n"))
    result = CliRunner().invoke(main, ["taxonomy", "validate", str(sample_taxonomy.root), "--base", "main"])
    assert result.exit_code == 0, result.output
    assert "1 file(s) checked" in result.output
    diff = CliRunner().invoke(main, ["taxonomy", "diff", str(sample_taxonomy.root), "--base", "main"])
    assert diff.stdout.splitlines() == ["compositional_skills/writing/tanka/qna.yaml"]


def test_unknown_base_is_one_line(sample_taxonomy: SampleTaxonomy) -> None:
    result = CliRunner().invoke(main, ["taxonomy", "diff", str(sample_taxonomy.root), "--base", "nope"])
    assert result.exit_code == EXIT_FAILED
    expected = f"error: cannot find the taxonomy base ref 'nope' in {sample_taxonomy.root}"
    assert result.output.strip() == expected


def _sync(taxonomy: SampleTaxonomy, folder: Path) -> dict[str, Any]:
    """`labtune taxonomy sync` of the branch main, as the sync pod runs it; its summary."""
    config = folder / "sync.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "TaxonomySync",
                "git": {"url": str(taxonomy.root), "branch": "main"},
                "manifest": str(folder / "manifest.json"),
                "terminationLog": str(folder / "termination-log"),
            }
        )
    )
    result = CliRunner().invoke(main, ["taxonomy", "sync", "--config", str(config)])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads((folder / "termination-log").read_text())
    return summary


def test_sync_command(sample_taxonomy: SampleTaxonomy, tmp_path: Path) -> None:
    summary = _sync(sample_taxonomy, tmp_path)
    assert summary["commit"] == sample_taxonomy.commit
    assert summary["leafCounts"] == {"knowledge": 1, "freeformSkills": 1, "groundedSkills": 1, "total": 3}
    assert summary["changedLeafCount"] == 3
    assert (tmp_path / "manifest.json").is_file()


def test_the_leaves_digest_changes_with_a_leaf_only(
    sample_taxonomy: SampleTaxonomy, tmp_path: Path, git: type[Git]
) -> None:
    """What a LabPipeline runs on: a commit that changes no qna.yaml keeps the digest."""
    first = _sync(sample_taxonomy, tmp_path)["leavesDigest"]
    assert len(first) == 64
    (sample_taxonomy.root / "README.md").write_text("how to contribute\n")
    git.commit_all(sample_taxonomy.root, "docs")
    assert _sync(sample_taxonomy, tmp_path)["leavesDigest"] == first
    leaf = sample_taxonomy.root / SKILL
    leaf.write_text(leaf.read_text().replace("the sea.", "the harbour."))
    git.commit_all(sample_taxonomy.root, "a leaf")
    assert _sync(sample_taxonomy, tmp_path)["leavesDigest"] != first


def test_sync_bad_config_and_unreachable_repository(tmp_path: Path) -> None:
    config = tmp_path / "sync.yaml"
    config.write_text("git: {url: x}\nmanifest: m.json\nsurprise: 1\n")
    result = CliRunner().invoke(main, ["taxonomy", "sync", "--config", str(config)])
    assert result.exit_code == EXIT_CONFIG_ERROR
    assert "surprise" in result.output
    config.write_text(f"git: {{url: '{tmp_path}/missing'}}\nmanifest: {tmp_path}/m.json\n")
    result = CliRunner().invoke(main, ["taxonomy", "sync", "--config", str(config)])
    assert result.exit_code == EXIT_CONFIG_ERROR  # no such repository: retrying cannot help
    assert result.output.startswith("error: cannot fetch the default branch from")
