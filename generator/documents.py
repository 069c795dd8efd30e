"""Knowledge documents: the files a knowledge leaf points at (`document.repo` at
`document.commit`, selected by `patterns`), read as text. Markdown always; PDF through docling
when it is installed."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from labtune.contract import ConfigError
from labtune.contract.taxonomy_sync import GitCheckout
from labtune.generator import gitrepo

MARKDOWN_SUFFIXES = (".md", ".markdown")


class DocumentError(ConfigError):
    """A document is missing or cannot be read: the message names the file and why."""


class DocumentSource(BaseModel):
    """The `document` block of a knowledge qna.yaml."""

    repo: str
    commit: str
    patterns: list[str]


class Document(BaseModel):
    path: str
    text: str


def _pdf_text(path: Path, name: str) -> str:
    if importlib.util.find_spec("docling") is None:
        raise DocumentError(f"{name}: PDF documents need docling (pip install docling); it is not installed")
    from docling.document_converter import DocumentConverter  # type: ignore[import-not-found,unused-ignore]

    try:
        text: str = DocumentConverter().convert(path).document.export_to_markdown()
    except Exception as error:  # docling raises many types; any failure is this file's problem
        reason = " ".join(str(error).split())  # one line: it ends up in the termination message
        raise DocumentError(f"{name}: docling cannot convert it: {reason}{_models_hint(error)}") from None
    return text


def _models_hint(error: Exception) -> str:
    """What to do when docling could not fetch its layout models (an offline or air-gapped pod)."""
    if not type(error).__module__.startswith("huggingface_hub"):
        return ""
    return (
        " (docling's models are missing: run `docling-tools models download -o DIR` where the hub is"
        " reachable, put DIR in the image or on the artifact volume, and set DOCLING_ARTIFACTS_PATH=DIR)"
    )


def read(path: Path, name: str) -> str:
    """The text of one document file, `name` being how messages refer to it."""
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DocumentError(f"{name}: not UTF-8 text") from None
    if suffix == ".pdf":
        return _pdf_text(path, name)
    raise DocumentError(f"{name}: unsupported document format {suffix or '(none)'}: use Markdown or PDF")


@contextmanager
def _git(source: DocumentSource, template: GitCheckout) -> Iterator[GitCheckout]:
    """The checkout of the documents' commit (credentials and bounds as in `template`); a failure
    retrying cannot help becomes a DocumentError, others stay GitErrors (the Job retries)."""
    try:
        yield template.model_copy(
            update={"url": source.repo, "commit": source.commit, "branch": None, "tag": None}
        )
    except gitrepo.GitConfigError as error:
        raise DocumentError(f"knowledge documents: {error}") from None
    except gitrepo.GitError as error:
        raise gitrepo.GitError(f"knowledge documents: {error}") from None


def check(source: DocumentSource, template: GitCheckout) -> None:
    """Proves that the documents' repository has the commit, without fetching its files."""
    with _git(source, template) as spec:
        gitrepo.probe(spec)


def checkout(source: DocumentSource, cache: Path, template: GitCheckout) -> Path:
    """The repository at the commit, cloned once into `cache`."""
    key = hashlib.sha256(f"{source.repo}@{source.commit}".encode()).hexdigest()[:16]
    dest = cache / key
    done = dest / ".labtune-complete"
    if not done.exists():
        with _git(source, template) as spec:
            gitrepo.clone(spec, dest / "repo")
        done.touch()
    return dest / "repo"


def fetch(source: DocumentSource, cache: Path, template: GitCheckout) -> list[Document]:
    """Every file matched by the patterns, read; a pattern matching nothing is an error."""
    root = checkout(source, cache, template)
    documents: dict[str, Document] = {}
    for pattern in source.patterns:
        matches = sorted(
            p for p in root.glob(pattern) if p.is_file() and ".git" not in p.relative_to(root).parts
        )
        if not matches:
            raise DocumentError(
                f"document pattern {pattern!r} matches no file in {source.repo}@{source.commit}"
            )
        for path in matches:
            name = path.relative_to(root).as_posix()
            documents.setdefault(name, Document(path=name, text=read(path, f"{source.repo}:{name}")))
    return list(documents.values())
