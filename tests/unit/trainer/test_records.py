from __future__ import annotations

import json
from pathlib import Path

import pytest

from labtune.contract import ConfigError
from labtune.trainer.dataset_reader import read_samples


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_the_generator_format(tmp_path: Path) -> None:
    record = {
        "id": "abc",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ],
        "metadata": {"source": "generated", "leaf": "knowledge/x"},
        "unmask": True,
    }
    [sample] = read_samples(_write(tmp_path / "d.jsonl", json.dumps(record), ""))
    assert [m.role for m in sample.messages] == ["system", "user", "assistant"]
    assert sample.unmask


def test_reads_instructlab_sdg_records_and_unrolls_pretraining_messages(tmp_path: Path) -> None:
    skills = {
        "messages": [
            {"content": "sys", "role": "system"},
            {"content": "q", "role": "user"},
            {"content": "a", "role": "assistant"},
        ],
        "metadata": json.dumps({"system_prompt": "sys", "dataset": "skills"}),
        "id": "1",
    }
    knowledge = {
        "messages": [
            {"content": "sys", "role": "system"},
            {"content": "<|user|>\nWhat is it?\n<|assistant|>\nIt is <b>this</b>.", "role": "pretraining"},
        ],
        "metadata": "{}",
        "id": "2",
    }
    plain, unrolled = read_samples(_write(tmp_path / "d.jsonl", json.dumps(skills), json.dumps(knowledge)))
    assert not plain.unmask
    assert unrolled.unmask
    assert [(m.role, m.content) for m in unrolled.messages] == [
        ("system", "sys"),
        ("user", "What is it?"),
        ("assistant", "It is <b>this</b>."),
    ]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "has no samples"),
        (("", "  "), "has no samples"),
        (("{not json",), "line 1: not JSON"),
        (('{"messages": [{"role": "user", "content": "q"}]}',), "line 1: the sample has no assistant turn"),
        (('{"messages": []}',), "line 1: messages: List should have at least 1 item"),
        (
            (
                '{"messages": [{"role": "assistant", "content": "a"}]}',
                '{"messages": [{"role": "tool", "content": "x"}]}',
            ),
            "line 2: messages.0.role: Input should be 'system', 'user' or 'assistant'",
        ),
    ],
)
def test_bad_datasets_are_config_errors_naming_the_line(
    tmp_path: Path, lines: tuple[str, ...], message: str
) -> None:
    path = _write(tmp_path / "d.jsonl", *lines)
    with pytest.raises(ConfigError, match=message) as caught:
        read_samples(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_dataset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        read_samples(tmp_path / "missing.jsonl")
