"""Validation of qna.yaml files with InstructLab's own parser (instructlab-schema): the schema
chosen by the file's `version`, yamllint with the relaxed rules and no line-length limit, lint
warnings counted as errors. Messages are collected with their line instead of printed."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from instructlab.schema import schema_versions
from instructlab.schema.taxonomy import (
    DEFAULT_YAMLLINT_CONFIG,
    Taxonomy,
    TaxonomyMessageFormat,
    TaxonomyParser,
    TaxonomyReadingException,
)
from pydantic import BaseModel, Field
from yamllint import linter  # type: ignore[import-untyped]
from yamllint.config import YamlLintConfig  # type: ignore[import-untyped]

from labtune.contract.common import LeafType
from labtune.generator import leaves

_PARSER_LOGGER = logging.getLogger("instructlab.schema.taxonomy")
_PATH_TOKEN = re.compile(r"\.(?P<key>[^.\[]+)|\[(?P<index>\d+)\]|\['(?P<quoted>(?:[^'\\]|\\.)*)'\]")
_PARSER_CUT = 200
"""instructlab-schema keeps the last 200 characters of a schema message (`message[-200:]`), which
for a long value is its middle; such messages are rebuilt from the value, cut at the end."""
_VALUE_SHOWN = 80


@functools.cache
def _lint_config() -> YamlLintConfig:
    # Parsed once per process: building it (it extends yamllint's `relaxed` file) takes 3 ms, which
    # every leaf paid, about a quarter of validating one.
    return YamlLintConfig(DEFAULT_YAMLLINT_CONFIG)


class Issue(BaseModel):
    """One problem in a file, with its 1-based line."""

    line: int
    column: int = 1
    message: str


class FileReport(BaseModel):
    """The result for one file of the taxonomy."""

    path: str
    leaf_type: LeafType | None = None
    """None for a file that is not a leaf (a misnamed qna.yml)."""
    errors: list[Issue] = Field(default_factory=list)
    warnings: list[Issue] = Field(default_factory=list)
    contents: dict[str, Any] | None = Field(default=None, exclude=True)
    """The parsed YAML of a valid leaf (for generation; not part of reports)."""


class ValidationReport(BaseModel):
    """The result for a set of files."""

    files: list[FileReport]

    @property
    def error_count(self) -> int:
        return sum(len(f.errors) for f in self.files)

    @property
    def warning_count(self) -> int:
        return sum(len(f.warnings) for f in self.files)


class _Parser(TaxonomyParser):
    """InstructLab's parser with yamllint run in-process (its default shells out to a `yamllint`
    that may not be on PATH, and then silently skips linting)."""

    def __init__(self) -> None:
        # schema_version=0: each file's `version` key selects the schema, as `ilab taxonomy diff`.
        super().__init__(
            schema_version=0,
            yamllint_config=DEFAULT_YAMLLINT_CONFIG,
            yamllint_strict=True,
            message_format=TaxonomyMessageFormat.LOGGING,
        )
        self.yq_available = False  # line numbers are found from the YAML nodes instead

    def _yamllint(self, text: str, taxonomy: Taxonomy) -> None:
        for problem in linter.run(text, _lint_config()):
            # yamllint_strict: warnings are errors, as InstructLab runs it.
            taxonomy.error(
                "%s",
                f"{problem.desc} ({problem.rule})" if problem.rule else problem.desc,
                line=problem.line,
                col=problem.column,
            )


class _Collector(logging.Handler):
    """Turns the parser's log records back into (severity, line, column, yaml path, message)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[Literal["error", "warning"], int, int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The parser logs "%s:%s:%s [%s] <msg>" % (path, line, col, yaml_path, *msg_args), or the
        # same without "[%s] " when there is no YAML path.
        args = tuple(record.args or ())
        with_path = record.msg.startswith("%s:%s:%s [%s] ")
        prefix = 4 if with_path else 3
        template = record.msg.split(" ", 2 if with_path else 1)[-1]
        message = template % args[prefix:] if len(args) > prefix else template
        severity: Literal["error", "warning"] = "error" if record.levelno >= logging.ERROR else "warning"
        yaml_path = str(args[3]) if with_path else ""
        self.records.append((severity, int(str(args[1])), int(str(args[2])), yaml_path, message))


@contextmanager
def _collected() -> Iterator[_Collector]:
    collector = _Collector()
    _PARSER_LOGGER.addHandler(collector)
    propagate, _PARSER_LOGGER.propagate = _PARSER_LOGGER.propagate, False
    try:
        yield collector
    finally:
        _PARSER_LOGGER.removeHandler(collector)
        _PARSER_LOGGER.propagate = propagate


def line_of(text: str, yaml_path: str) -> int | None:
    """The line of the node at a JSON path such as `.seed_examples[2].answer` (its closest
    existing ancestor when the node itself is missing)."""
    try:
        node: yaml.Node | None = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node else None
    for token in _PATH_TOKEN.finditer(yaml_path):
        if isinstance(node, yaml.MappingNode):
            key = token["key"] or token["quoted"]
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and token["index"] is not None:
            index = int(token["index"])
            node = node.value[index] if index < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _unreadable(cause: BaseException | None) -> Issue:
    """The issue for a file the parser could not read (YAML syntax, encoding)."""
    if isinstance(cause, yaml.MarkedYAMLError) and cause.problem_mark is not None:
        mark = cause.problem_mark
        return Issue(
            line=mark.line + 1, column=mark.column + 1, message=f"YAML syntax error: {cause.problem}"
        )
    return Issue(line=1, message=f"cannot read the file: {cause}")


def _value_at(contents: object, yaml_path: str) -> object:
    """The value at a JSON path such as `.seed_examples[2].answer`; None when there is none."""
    value = contents
    for token in _PATH_TOKEN.finditer(yaml_path):
        key = token["key"] or token["quoted"]
        if isinstance(value, dict) and key is not None:
            value = value.get(key)
        elif isinstance(value, list) and token["index"] is not None and int(token["index"]) < len(value):
            value = value[int(token["index"])]
        else:
            return None
    return value


def _uncut(message: str, contents: object, yaml_path: str) -> str:
    """A schema message the parser cut at its start, told again with the value cut at its end:
    jsonschema's messages are the value's repr followed by what is wrong with it."""
    if len(message) < _PARSER_CUT or not yaml_path:
        return message
    shown = repr(_value_at(contents, yaml_path))
    overlap = next((n for n in range(min(len(shown), len(message)), 0, -1) if shown.endswith(message[:n])), 0)
    if not overlap:
        return message
    head = shown if len(shown) <= _VALUE_SHOWN else f"{shown[:_VALUE_SHOWN]}…{shown[-1]}"
    return head + message[overlap:]


def _supported_versions() -> str:
    return ", ".join(v.name[1:] for v in schema_versions())


def validate_file(root: Path, path: str) -> FileReport:
    """Validates one file (`path` relative to `root`) as InstructLab does."""
    if leaves.is_misnamed_leaf(path):
        return FileReport(
            path=path,
            warnings=[Issue(line=1, message=f"skipped: taxonomy files must be named {leaves.LEAF_FILE!r}")],
        )
    file = root / path
    with _collected() as collector:
        try:
            taxonomy = _Parser().parse(file)
        except TaxonomyReadingException as error:
            return FileReport(path=path, errors=[_unreadable(error.__cause__)])
    text = file.read_text(encoding="utf-8") if file.is_file() else ""
    report = FileReport(path=path)
    for severity, line, column, yaml_path, message in collector.records:
        if yaml_path and line == 1:
            line = line_of(text, yaml_path) or line
        if message.startswith("Cannot load schema file"):
            message = f"version {taxonomy.version} is not supported; the versions are {_supported_versions()}"
        else:
            message = _uncut(message, taxonomy.contents, yaml_path)
        shown = f"{message} (at {yaml_path})" if yaml_path and yaml_path != "." else message
        (report.errors if severity == "error" else report.warnings).append(
            Issue(line=line, column=column, message=shown)
        )
    if isinstance(taxonomy.contents, dict) and taxonomy.contents:
        report.leaf_type = leaves.leaf_type(path, taxonomy.contents)
        if not report.errors:
            report.contents = dict(taxonomy.contents)
    return report


def validate_tree(root: Path, paths: list[str]) -> ValidationReport:
    """Validates the given files of a taxonomy checkout: leaves and misnamed leaves; others ignored."""
    wanted = [p for p in paths if leaves.is_leaf(p) or leaves.is_misnamed_leaf(p)]
    return ValidationReport(files=[validate_file(root, p) for p in sorted(wanted)])
