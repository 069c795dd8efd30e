"""Bad configuration of `labtune train`: exit code 78 and one line on stderr; a wrong path or a
metrics port in use is found before torch is imported (some 20 s), and a config that fails its
checks leaves the output folder as it was, so the corrected config runs there instead of being
refused as a different run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labtune.contract import EXIT_CONFIG_ERROR, ConfigError
from labtune.trainer.trainer_cli import run

LABTUNE = str(Path(sys.executable).parent / "labtune")


@pytest.fixture
def one_phase(tiny_model: Path, tiny_dataset: Path) -> dict[str, Any]:
    return {
        "baseModel": {"uri": str(tiny_model)},
        "datasets": {"knowledge": str(tiny_dataset)},
        "phases": [{"name": "knowledge", "dataset": "knowledge", "maxSeqLen": 64, "effectiveBatchSize": 8}],
    }


def _train(config: Path, env: dict[str, str]) -> str:
    """Runs `labtune train`; the one line it printed, having exited with the config error code."""
    result = subprocess.run(
        [LABTUNE, "train", "--config", str(config)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_malformed_yaml_is_one_line_with_its_position(tmp_path: Path, without_torch: dict[str, str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("output: out\n  phases: []\n")
    problem = "line 2, column 9: mapping values are not allowed here"
    assert _train(config, without_torch) == f"labtune train: config {config} is not valid YAML: {problem}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda tmp: {"baseModel": {"uri": f"{tmp}/no-model"}}, "base model {tmp}/no-model does not exist"),
        (
            lambda tmp: {"datasets": {"knowledge": f"{tmp}/no.jsonl"}},
            "dataset {tmp}/no.jsonl: No such file or directory",
        ),
        (lambda tmp: {"output": f"{tmp}/file"}, "output {tmp}/file is a file, not a folder"),
        (
            lambda tmp: {"output": f"{tmp}/file/out"},
            "output {tmp}/file/out cannot be created: {tmp}/file is a file",
        ),
        (
            lambda tmp: {"terminationLog": f"{tmp}/no-folder/log"},
            "termination log {tmp}/no-folder/log cannot be written: folder {tmp}/no-folder does not exist: "
            "set terminationLog to a writable file",
        ),
        (
            lambda tmp: {"terminationLog": str(tmp)},
            "termination log {tmp} cannot be written: it is a folder: set terminationLog to a writable file",
        ),
    ],
    ids=[
        "no base model",
        "no dataset",
        "output is a file",
        "a file in the way",
        "termination log without its folder",
        "termination log a folder",
    ],
)
def test_a_wrong_path_fails_before_torch_is_imported(
    tmp_path: Path,
    write_config: Callable[..., Path],
    one_phase: dict[str, Any],
    without_torch: dict[str, str],
    change: Callable[[Path], dict[str, Any]],
    message: str,
) -> None:
    (tmp_path / "file").write_text("x")
    config = write_config(**(one_phase | change(tmp_path)))
    assert _train(config, without_torch) == "labtune train: " + message.format(tmp=tmp_path)
    assert (tmp_path / "file").read_text() == "x"
    assert not (tmp_path / "out").exists()


def test_a_metrics_port_in_use_fails_before_torch_is_imported(
    tmp_path: Path,
    write_config: Callable[..., Path],
    one_phase: dict[str, Any],
    without_torch: dict[str, str],
    port_in_use: int,
) -> None:
    # The server starts after torch is imported and the data tokenized; the port is checked first.
    config = write_config(**one_phase, metricsPort=port_in_use)
    hint = "set metricsPort to a free port or 0 to disable it"
    assert _train(config, without_torch) == f"labtune train: metrics port {port_in_use} is in use: {hint}"
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "termination-log").exists()


def test_a_metrics_port_taken_after_the_check_is_a_config_error(port_in_use: int) -> None:
    # Taken between the check and the server's start (or by another pod's process meanwhile).
    from labtune.trainer.trainer_metrics import TrainerMetrics

    with pytest.raises(ConfigError, match=f"^metrics port {port_in_use} is in use: set metricsPort"):
        TrainerMetrics(port_in_use)


def test_a_config_that_is_a_folder_or_missing_is_one_line(
    tmp_path: Path, without_torch: dict[str, str]
) -> None:
    assert _train(tmp_path, without_torch) == f"labtune train: cannot read config {tmp_path}: Is a directory"
    missing = tmp_path / "missing.yaml"
    assert (
        _train(missing, without_torch)
        == f"labtune train: cannot read config {missing}: No such file or directory"
    )


def test_a_config_that_fails_when_the_model_loads_writes_nothing_and_the_corrected_one_runs(
    tmp_path: Path,
    write_config: Callable[..., Path],
    one_phase: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Only the loaded model can tell that it has no such module: the last check of the config.
    wrong = {"type": "lora", "lora": {"rank": 4, "targetModules": ["no_such_proj"]}}
    assert run(write_config(**one_phase, method=wrong)) == EXIT_CONFIG_ERROR
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("labtune train:")]
    assert line.startswith("labtune train: method.lora: Target modules {'no_such_proj'} not found")
    assert not (tmp_path / "out").exists()

    assert run(write_config(**one_phase)) == 0
    assert (tmp_path / "out" / "adapter").is_dir()
    assert "holds a run of a different config" not in capsys.readouterr().err
