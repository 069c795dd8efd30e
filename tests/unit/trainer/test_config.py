"""Bad configs and bad input: one line on stderr, EXIT_CONFIG_ERROR, nothing presented as output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labtune.contract import EXIT_CONFIG_ERROR, ConfigError, load_config
from labtune.contract.train import TrainConfig
from labtune.trainer.modeling import load_tokenizer
from labtune.trainer.trainer_cli import run


def _phase(**overrides: Any) -> dict[str, Any]:
    return {"name": "knowledge", "dataset": "knowledge", "maxSeqLen": 64, "effectiveBatchSize": 4} | overrides


@pytest.fixture
def valid(tiny_model: Path, tiny_dataset: Path) -> dict[str, Any]:
    return {
        "baseModel": {"uri": str(tiny_model)},
        "datasets": {"knowledge": str(tiny_dataset)},
        "phases": [_phase()],
    }


def test_a_valid_config_loads(write_config: Callable[..., Path], valid: dict[str, Any]) -> None:
    config = load_config(write_config(**valid), TrainConfig)
    assert config.method.type == "lora"
    assert config.phases[0].learning_rate == 2e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"phases": []}, "phases: List should have at least 1 item"),
        ({"phases": [_phase(), _phase()]}, "phase names must be unique"),
        (
            {"phases": [_phase(name="skills", dataset="skills")]},
            "phase skills trains on skills: set datasets.skills",
        ),
        ({"phases": [_phase(learningRate=0.5)]}, "learning rate must be in"),
        ({"phases": [_phase(learningRate=0.0)]}, "learning rate must be in"),
        (
            {"phases": [_phase(warmupSteps=2, warmupRatio=0.1)]},
            "set at most one of warmupSteps or warmupRatio",
        ),
        ({"phases": [_phase(maxSeqLen=8)]}, "maxSeqLen: Input should be greater than or equal to 64"),
        ({"method": {"type": "full", "lora": {"rank": 4}}}, "lora settings apply only to method.type lora"),
        ({"method": {"type": "lora", "lora": {"rank": 0}}}, "method.lora.rank: Input should be greater than"),
        ({"microBatchSize": 0}, "microBatchSize: Input should be greater than or equal to 1"),
        ({"epochz": 3}, "epochz: Extra inputs are not permitted"),
    ],
)
def test_out_of_range_settings_are_config_errors(
    write_config: Callable[..., Path], valid: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(**(valid | change)), TrainConfig)


def _bad_input(
    tmp_path: Path, valid: dict[str, Any], case: str, make_model: Callable[..., Path]
) -> dict[str, Any]:
    if case == "missing dataset":
        return valid | {"datasets": {"knowledge": str(tmp_path / "nope.jsonl")}}
    if case == "empty dataset":
        (tmp_path / "empty.jsonl").write_text("")
        return valid | {"datasets": {"knowledge": str(tmp_path / "empty.jsonl")}}
    if case == "no assistant turn":
        (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
        return valid | {"datasets": {"knowledge": str(tmp_path / "bad.jsonl")}}
    if case == "not a model":
        (tmp_path / "notamodel").mkdir()
        return valid | {"baseModel": {"uri": str(tmp_path / "notamodel")}}
    if case == "fake gguf":
        (tmp_path / "model.gguf").write_text("not gguf")
        return valid | {"baseModel": {"uri": str(tmp_path / "model.gguf")}}
    if case == "no chat template":
        return valid | {"baseModel": {"uri": str(make_model(tmp_path / "plain", chat_template=None))}}
    if case == "qlora without cuda":
        return valid | {"method": {"type": "qlora"}}
    if case == "unsupported uri":
        return valid | {"output": "s3://bucket/out"}
    if case == "unknown target module":
        return valid | {"method": {"type": "lora", "lora": {"targetModules": ["no_such_proj"]}}}
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing dataset", "nope.jsonl: No such file or directory"),
        ("empty dataset", "empty.jsonl has no samples"),
        ("no assistant turn", "bad.jsonl line 1: the sample has no assistant turn"),
        ("not a model", "is not a model: expected a Hugging Face folder with config.json or a .gguf file"),
        ("fake gguf", "is not a model"),
        ("no chat template", "has no chat template: set baseModel.chatTemplate"),
        ("qlora without cuda", "method qlora needs a CUDA GPU"),
        ("unsupported uri", "only pvc:// URIs are supported"),
        ("unknown target module", "method.lora: Target modules"),
    ],
)
def test_bad_input_exits_with_the_config_error_code_and_one_line(
    tmp_path: Path,
    write_config: Callable[..., Path],
    valid: dict[str, Any],
    make_model: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    config = _bad_input(tmp_path, valid, case, make_model)
    assert run(write_config(**config)) == EXIT_CONFIG_ERROR
    stderr_lines = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("labtune train:")
    ]
    assert len(stderr_lines) == 1
    assert message in stderr_lines[0]
    output = tmp_path / "out"
    presented = [p.name for p in output.iterdir()] if output.exists() else []
    assert not {"adapter", "model", "summary.json"} & set(presented)
    assert not (tmp_path / "termination-log").exists()


def test_the_configured_chat_template_serves_a_base_model_without_one(
    tmp_path: Path, make_model: Callable[..., Path]
) -> None:
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    assert (
        load_tokenizer(make_model(tmp_path / "plain", chat_template=None), template).chat_template == template
    )
    own = load_tokenizer(make_model(tmp_path / "own"), template).chat_template
    assert own is not None
    assert own != template  # the model's own template wins


def test_an_unreadable_config_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path / "missing.yaml") == EXIT_CONFIG_ERROR
    assert "cannot read config" in capsys.readouterr().err
