"""InstructLab's taxonomy rules on qna.yaml files of our own, valid and invalid."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labtune.generator import leaves
from labtune.generator.sync import summarize
from labtune.generator.taxonomy_scan import scan
from labtune.generator.validation import validate_file

DATA = Path(__file__).parent / "data"
SKILL = "compositional_skills/writing/haiku/qna.yaml"
GROUNDED = "compositional_skills/extraction/capitals/qna.yaml"
KNOWLEDGE = "knowledge/astronomy/sun/qna.yaml"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(DATA / "taxonomy", tmp_path, dirs_exist_ok=True)
    return tmp_path


def _write(root: Path, path: str, text: str) -> str:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
    return path


def _edit(root: Path, path: str, old: str, new: str) -> None:
    file = root / path
    assert old in file.read_text()
    file.write_text(file.read_text().replace(old, new, 1))


def test_sample_leaves_are_valid_and_typed(tree: Path) -> None:
    report = scan(tree).report
    assert report.error_count == 0, report
    assert {f.path: f.leaf_type for f in report.files} == {
        SKILL: "freeform_skill",
        GROUNDED: "grounded_skill",
        KNOWLEDGE: "knowledge",
    }


def test_missing_required_field_names_the_seed_line(tree: Path) -> None:
    _edit(
        tree,
        SKILL,
        "    answer: Red leaves let go now, the maple counts its losses, wind carries them home.\n",
        "",
    )
    (error,) = validate_file(tree, SKILL).errors
    assert "'answer' is a required property" in error.message
    assert error.line == 11  # the fourth seed example's line
    assert ".seed_examples[3]" in error.message


def test_wrong_type_points_at_the_value(tree: Path) -> None:
    _edit(tree, SKILL, "task_description: Write a haiku about the given subject.", "task_description: [1, 2]")
    errors = validate_file(tree, SKILL).errors
    assert [e.line for e in errors] == [3]
    assert "is not of type 'string'" in errors[0].message


def test_too_few_seed_examples(tree: Path) -> None:
    text = (tree / SKILL).read_text()
    _write(tree, SKILL, text[: text.index("  - question: Write a haiku about autumn.")])
    errors = validate_file(tree, SKILL).errors
    assert any("at least 5 items" in e.message and e.line == 5 for e in errors), errors


def test_unknown_property_is_an_error(tree: Path) -> None:
    _edit(tree, SKILL, "created_by: labtune-tests", "created_by: labtune-tests\nauthor: someone")
    errors = validate_file(tree, SKILL).errors
    assert any("author" in e.message for e in errors), errors


def test_version_selects_the_schema(tree: Path) -> None:
    # Compositional skills v2 is accepted; knowledge before v3 is rejected with a message saying so.
    _edit(tree, SKILL, "version: 3", "version: 2")
    assert validate_file(tree, SKILL).errors == []
    _edit(tree, KNOWLEDGE, "version: 3", "version: 2")
    (error,) = validate_file(tree, KNOWLEDGE).errors
    assert "Version 2 is not supported for knowledge" in error.message


def test_an_unknown_version_names_the_supported_ones(tree: Path) -> None:
    _edit(tree, SKILL, "version: 3", "version: 9")
    (error,) = validate_file(tree, SKILL).errors
    assert error.message == "version 9 is not supported; the versions are 1, 2, 3"


def test_a_long_value_is_cut_at_its_end_not_its_start(tree: Path) -> None:
    long = "Explain your reasoning step by step before you answer. " * 8
    _edit(
        tree,
        SKILL,
        "task_description: Write a haiku about the given subject.",
        f"task_description: [{long!r}]",
    )
    (error,) = validate_file(tree, SKILL).errors
    assert error.message.startswith("['Explain your reasoning step by step")
    assert error.message.endswith("…] is not of type 'string' (at .task_description)")
    assert len(error.message) < 160


def test_lint_warnings_count_as_errors_with_line_and_column(tree: Path) -> None:
    _edit(tree, SKILL, "created_by: labtune-tests", "created_by: labtune-tests   ")
    (error,) = validate_file(tree, SKILL).errors
    assert (error.line, error.column) == (2, 26)
    assert "trailing spaces" in error.message


def test_long_lines_are_allowed(tree: Path) -> None:
    _edit(tree, SKILL, "Write a haiku about the given subject.", ("Write a haiku. " * 40).strip())
    assert validate_file(tree, SKILL).errors == []


def test_syntax_error_is_reported_with_its_line(tree: Path) -> None:
    _write(tree, SKILL, "version: 3\ncreated_by: x\ntask_description: [unclosed\n")
    errors = validate_file(tree, SKILL).errors
    assert errors
    assert all(e.line >= 1 for e in errors)


def test_top_level_must_be_a_mapping(tree: Path) -> None:
    _write(tree, SKILL, "- just\n- a list\n")
    (error,) = validate_file(tree, SKILL).errors
    assert "not an object" in error.message or "top-level" in error.message


def test_empty_file_is_a_warning(tree: Path) -> None:
    _write(tree, SKILL, "")
    report = validate_file(tree, SKILL)
    assert report.errors == []
    assert [w.message for w in report.warnings] == ["The file is empty"]


def test_only_qna_yaml_under_the_taxonomy_folders_are_leaves(tree: Path) -> None:
    _write(tree, "compositional_skills/writing/misnamed/qna.yml", (tree / SKILL).read_text())
    _write(tree, "compositional_skills/writing/notes.yaml", "not: a leaf\n")
    _write(tree, "docs/qna.yaml", "not: a leaf\n")
    _write(tree, "qna.yaml", "not: a leaf\n")
    result = scan(tree)
    assert sorted(result.leaves) == sorted([SKILL, GROUNDED, KNOWLEDGE])
    misnamed = next(f for f in result.report.files if f.path.endswith("qna.yml"))
    assert misnamed.leaf_type is None
    assert misnamed.errors == []
    assert "must be named 'qna.yaml'" in misnamed.warnings[0].message
    assert result.report.error_count == 0


def test_path_filters() -> None:
    paths = [KNOWLEDGE, SKILL, GROUNDED]
    assert leaves.select(paths, ["knowledge/**"], []) == [KNOWLEDGE]
    assert leaves.select(paths, [], ["compositional_skills/writing/**"]) == [KNOWLEDGE, GROUNDED]
    assert leaves.select(paths, ["compositional_skills/**"], ["*/extraction/*"]) == [SKILL]


def test_the_sync_summary_counts_and_lists_the_warnings(tree: Path) -> None:
    """What the Taxonomy's status shows: a misnamed qna.yml is a warning with its path, not a silence."""
    _write(tree, "compositional_skills/writing/misnamed/qna.yml", (tree / SKILL).read_text())
    summary = summarize("a" * 40, scan(tree), "pvc://artifacts/manifest.json", "d" * 64)
    assert summary.warning_count == len(summary.warnings) == 1
    (warning,) = summary.warnings
    assert warning.path == "compositional_skills/writing/misnamed/qna.yml"
    assert "must be named 'qna.yaml'" in warning.message
    assert summary.leaf_counts.total == 3
