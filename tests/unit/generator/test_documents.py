"""PDF documents through docling: docling cannot run here (its layout models come from the Hugging
Face hub, which this machine cannot reach), so a stand-in converter raises what docling raises
without its models — huggingface_hub's own error, multi-line — and the message must be one line
that names the file and says how to provide the models."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from labtune.generator.documents import DocumentError, read


def _docling_raising(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    class DocumentConverter:
        def convert(self, source: Path) -> None:
            raise error

    for name in ("docling", "docling.document_converter"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.DocumentConverter = DocumentConverter  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, module)


def test_missing_docling_models_give_one_line_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline = LocalEntryNotFoundError(
        "Got: ConnectError: [Errno -2] Name or service not known\n"
        "An error happened while trying to locate the files on the Hub."
    )
    _docling_raising(monkeypatch, offline)
    pdf = tmp_path / "sun.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    with pytest.raises(DocumentError) as raised:
        read(pdf, "knowledge/sun:sun.pdf")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("knowledge/sun:sun.pdf: docling cannot convert it: Got: ConnectError")
    assert "docling-tools models download" in message
    assert "DOCLING_ARTIFACTS_PATH" in message


def test_other_docling_failures_name_the_file_without_the_models_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _docling_raising(monkeypatch, ValueError("PDF is encrypted"))
    pdf = tmp_path / "sun.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    with pytest.raises(
        DocumentError, match=r"^knowledge/sun:sun.pdf: docling cannot convert it: PDF is encrypted$"
    ):
        read(pdf, "knowledge/sun:sun.pdf")
