"""Mixing of the phase datasets, token-aware chunking and reading documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from labtune.api.synthetic_data_run_types import MixingSpec, ReplayDataset
from labtune.contract import ConfigError
from labtune.contract.records import Message, Record, SampleMetadata
from labtune.generator import documents
from labtune.generator.chunking import approximate_tokens, chunk
from labtune.generator.mixing import mix


def _records(kind: str, n: int) -> list[Record]:
    return [
        Record(
            id=f"{kind}{i}",
            messages=[Message(role="user", content=f"{kind} {i}"), Message(role="assistant", content="a")],
            metadata=SampleMetadata(
                source="generated", leaf_type="knowledge" if kind == "k" else "freeform_skill"
            ),
        )
        for i in range(n)
    ]


def _replay(n: int) -> list[Record]:
    return [
        Record(messages=[Message(role="user", content=f"r {i}"), Message(role="assistant", content="a")])
        for i in range(n)
    ]


def test_phase1_is_knowledge_unmasked_phase2_skills_with_replay() -> None:
    knowledge, skills = _records("k", 30), _records("s", 10)
    spec = MixingSpec(knowledge_replay_ratio=0.5, replay=[ReplayDataset(uri="pvc://c/r.jsonl", ratio=2.0)])
    phase1, phase2 = mix(knowledge, skills, spec, [_replay(100)], seed=3)
    assert sorted(r.id for r in phase1) == sorted(r.id for r in knowledge)
    assert all(r.unmask for r in phase1)
    sources = [r.metadata.source for r in phase2]
    assert (
        sources.count("generated"),
        sources.count("knowledge_replay"),
        sources.count("pvc://c/r.jsonl"),
    ) == (
        10,
        5,
        20,
    )
    assert not any(r.unmask for r in phase2)
    assert len({r.id for r in phase2}) == len(phase2)


def test_mixing_is_seeded() -> None:
    knowledge, skills = _records("k", 30), _records("s", 10)
    spec = MixingSpec(replay=[ReplayDataset(uri="r", samples=4)])
    first = mix(knowledge, skills, spec, [_replay(20)], seed=1)
    assert first == mix(knowledge, skills, spec, [_replay(20)], seed=1)
    assert first != mix(knowledge, skills, spec, [_replay(20)], seed=2)


def test_replay_is_capped_at_what_exists() -> None:
    _, phase2 = mix(_records("k", 3), _records("s", 10), MixingSpec(knowledge_replay_ratio=2.0), [], seed=0)
    assert [r.metadata.source for r in phase2].count("knowledge_replay") == 3


def test_chunks_respect_the_token_budget() -> None:
    paragraphs = [" ".join(f"word{p}_{w}" for w in range(30)) for p in range(10)]
    text = "\n\n".join(paragraphs)
    chunks = chunk(text, approximate_tokens, 200)
    assert len(chunks) > 1
    assert all(approximate_tokens(c) <= 200 + 5 for c in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())
    long_paragraph = " ".join(f"w{i}" for i in range(1000))
    pieces = chunk(long_paragraph, lambda s: len(s.split()), 100)
    assert [len(p.split()) for p in pieces] == [100] * 10


def test_markdown_is_read_and_other_formats_named(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n")
    assert documents.read(tmp_path / "a.md", "repo:a.md") == "# Title\n"
    (tmp_path / "b.md").write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError, match=r"repo:b\.md: not UTF-8 text"):
        documents.read(tmp_path / "b.md", "repo:b.md")
