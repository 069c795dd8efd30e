"""Bad input of `labtune generate` and `labtune taxonomy sync` that used to end in a traceback, a
multi-line dump or click's usage error: each is exit code 78 and one line on stderr naming what to
fix, found before any work (no clone, no output folder, no teacher model loaded, torch never
imported). Real files, a real socket holding the metrics port, the real `labtune` entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from labtune.contract import EXIT_CONFIG_ERROR

if TYPE_CHECKING:
    from conftest import SampleTaxonomy

LABTUNE = str(Path(sys.executable).parent / "labtune")
COMMANDS = {"generate": ["generate"], "sync": ["taxonomy", "sync"]}


def _error_line(*args: str, env: dict[str, str] | None = None) -> str:
    """Runs `labtune ARGS`; the one line it printed, having exited with the config error code."""
    run = subprocess.run([LABTUNE, *args], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == EXIT_CONFIG_ERROR, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _config(tmp_path: Path, command: str, **overrides: Any) -> Path:
    """A config of `command` whose taxonomy does not exist: any check that comes later than the
    ones tested here would fail on it instead."""
    missing = {"url": str(tmp_path / "no-such-repository")}
    config: dict[str, Any] = {"metricsPort": 0, "terminationLog": str(tmp_path / "termination-log")}
    if command == "sync":
        config |= {"git": missing, "manifest": str(tmp_path / "mnt/manifest.json")}
    else:
        teacher = {"model": "m", "url": "http://127.0.0.1:9/v1"}  # never asked: the config fails first
        config |= {"taxonomy": missing, "leaves": "all", "teacher": teacher, "output": str(tmp_path / "out")}
    return _write(tmp_path / f"{command}.yaml", config | overrides)


def _run(tmp_path: Path, command: str, env: dict[str, str] | None = None, **overrides: Any) -> str:
    """The error line of `command` run with that config."""
    return _error_line(*COMMANDS[command], "--config", str(_config(tmp_path, command, **overrides)), env=env)


def _nothing_done(tmp_path: Path) -> None:
    for name in ("out", "mnt", "termination-log"):
        assert not (tmp_path / name).exists(), name


# The pipeline file (pipeline.path): read before the taxonomy is fetched.


def test_a_pipeline_file_that_is_not_yaml_is_one_line_with_its_position(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("name: mine\n  flows: {}\n")
    line = _run(tmp_path, "generate", pipeline={"path": str(pipeline)})
    assert (
        line
        == f"pipeline {pipeline} is not valid YAML: line 2, column 8: mapping values are not allowed here"
    )
    _nothing_done(tmp_path)


def _simple_flow(**block: Any) -> dict[str, Any]:
    return {"blocks": [block], "sample": {"user": "{{ question }}", "assistant": "{{ answer }}"}}


@pytest.mark.parametrize(
    ("flows", "problem"),
    [
        ([{"knowledge": {}}], "flows: Input should be a valid dictionary"),
        # A flow or its blocks of the wrong shape: these used to fail while reading prompt files.
        ({"knowledge": "oops"}, "flows.knowledge: Input should be a valid dictionary or instance of Flow"),
        (
            {"knowledge": {"blocks": "oops", "sample": {"user": "u", "assistant": "a"}}},
            "flows.knowledge.blocks: Input should be a valid list",
        ),
        (
            {"knowledge": _simple_flow(type="dedupe", name="d", fields=[])},
            "flows.knowledge.blocks.0.dedupe.fields: "
            "List should have at least 1 item after validation, not 0",
        ),
    ],
    ids=["flows a list", "a flow a string", "blocks a string", "a field too short"],
)
def test_a_pipeline_that_fails_validation_is_one_line(tmp_path: Path, flows: Any, problem: str) -> None:
    pipeline = _write(tmp_path / "pipeline.yaml", {"name": "mine", "flows": flows})
    line = _run(tmp_path, "generate", pipeline={"path": str(pipeline)})
    assert line == f"pipeline {pipeline} is invalid: {problem}"
    _nothing_done(tmp_path)


def test_a_pipeline_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    line = _run(tmp_path, "generate", pipeline={"path": str(tmp_path)})
    assert line == f"cannot read pipeline {tmp_path}: Is a directory"


# The termination log: checked at the start, written at the end.


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("no-such-folder/log", "folder {tmp}/no-such-folder does not exist"),
        ("file/log", "{tmp}/file is a file"),
        (".", "it is a folder"),
    ],
    ids=["no folder", "a file in the way", "a folder"],
)
def test_a_termination_log_that_cannot_be_written_fails_before_any_work(
    tmp_path: Path, command: str, where: str, reason: str
) -> None:
    (tmp_path / "file").write_text("x")
    log = tmp_path / where
    line = _run(tmp_path, command, terminationLog=str(log))
    reason = reason.format(tmp=tmp_path)
    assert line == f"termination log {log} cannot be written: {reason}: set terminationLog to a writable file"
    assert (tmp_path / "file").read_text() == "x"
    _nothing_done(tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_termination_log_check_creates_nothing(tmp_path: Path, command: str) -> None:
    # A log that does not exist yet in a writable folder passes; the run then fails on the taxonomy
    # and the log is still not there.
    line = _run(tmp_path, command)
    assert "no-such-repository" in line
    _nothing_done(tmp_path)


# The metrics port.


def test_a_metrics_port_in_use_is_one_line_before_any_work(tmp_path: Path, port_in_use: int) -> None:
    line = _run(tmp_path, "generate", metricsPort=port_in_use)
    assert line == f"metrics port {port_in_use} is in use: set metricsPort to a free port or 0 to disable it"
    _nothing_done(tmp_path)


# --config itself.


@pytest.mark.parametrize("command", COMMANDS)
def test_a_config_that_is_a_folder_or_missing_is_one_line(tmp_path: Path, command: str) -> None:
    line = _error_line(*COMMANDS[command], "--config", str(tmp_path))
    assert line == f"cannot read config {tmp_path}: Is a directory"
    missing = tmp_path / "missing.yaml"
    line = _error_line(*COMMANDS[command], "--config", str(missing))
    assert line == f"cannot read config {missing}: No such file or directory"


# The transformers teacher's model: checked before transformers (and torch) is imported.


def _empty_folder(path: Path) -> Path:
    path.mkdir()
    return path


def _folder_with_config(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "config.json").write_text(text)
    return path


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (
            lambda tmp: _empty_folder(tmp / "model"),
            "{model} is not a Hugging Face model folder: no config.json",
        ),
        (
            lambda tmp: _folder_with_config(tmp / "model", "{not json"),
            "{model}: config.json is not valid JSON",
        ),
        (
            lambda tmp: _folder_with_config(tmp / "model", "[1, 2]"),
            "{model}: config.json is not a JSON object",
        ),
        (lambda tmp: _file(tmp / "model.gguf", "not a model\n"), "{model} is not a GGUF file"),
        (
            lambda tmp: _file(tmp / "model.bin", "not a model\n"),
            "{model} is neither a Hugging Face model folder nor a .gguf file",
        ),
    ],
    ids=["empty folder", "config.json not JSON", "config.json a list", "text named .gguf", "not .gguf"],
)
def test_a_teacher_model_that_is_not_one_is_one_line_before_torch_is_imported(
    tmp_path: Path, sample_taxonomy: SampleTaxonomy, without_torch: dict[str, str], make: Any, problem: str
) -> None:
    model = make(tmp_path)
    line = _run(
        tmp_path,
        "generate",
        env=without_torch,
        taxonomy={"url": str(sample_taxonomy.root), "commit": sample_taxonomy.commit},
        teacher={"backend": "transformers", "model": str(model)},
    )
    assert line == "teacher model " + problem.format(model=model)
    _nothing_done(tmp_path)
