"""Token-aware chunking and reading documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from labtune.contract import ConfigError
from labtune.generator import documents
from labtune.generator.chunking import approximate_tokens, chunk


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
