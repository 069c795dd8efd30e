"""Pipelines as data: the YAML model of a generation pipeline (one flow of blocks per leaf type,
and how a surviving row becomes a chat sample), and loading the built-in or a custom one."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labtune.contract import ConfigError
from labtune.contract.common import LeafType, read_yaml, validation_problems
from labtune.generator.parsers import Parser, ScoreParser

BUILTIN = ("simple", "full", "multiple-choice")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Prompted(_Model):
    """A block that renders a Jinja2 prompt per row: inline `prompt`, or `prompt_file` relative
    to the pipeline file (read when the pipeline is loaded)."""

    name: str
    prompt: str | None = None
    prompt_file: str | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> _Prompted:
        if (self.prompt is None) == (self.prompt_file is None):
            raise ValueError(f"block {self.name!r}: set exactly one of prompt or prompt_file")
        return self


class GenerateBlock(_Prompted):
    """Asks the teacher `n` times per row; each parsed record becomes a new row (the input row's
    fields plus the record's)."""

    type: Literal["generate"]
    n: int | Literal["samples_per_seed"] = 1
    """Requests per row; `samples_per_seed` takes the run's scale setting."""
    temperature: float = Field(default=0.7, ge=0)
    max_tokens: int = Field(default=512, ge=1)
    parser: Parser


class JudgeBlock(_Prompted):
    """Asks the teacher to score each row and keeps the rows scoring at least `threshold`."""

    type: Literal["judge"]
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=256, ge=1)
    parser: ScoreParser
    threshold: float


class DedupeBlock(_Model):
    """Keeps the first of the rows equal in `fields` (compared case- and space-insensitively)."""

    type: Literal["dedupe"]
    name: str
    fields: list[str] = Field(min_length=1)


class FlattenBlock(_Model):
    """One row per item of the list in `field`: a mapping item's keys become fields, any other
    item replaces `field`."""

    type: Literal["flatten"]
    name: str
    field: str


class CombineBlock(_Model):
    """Sets `field` to a Jinja2 template rendered over the row."""

    type: Literal["combine"]
    name: str
    field: str
    template: str


Block = Annotated[
    GenerateBlock | JudgeBlock | DedupeBlock | FlattenBlock | CombineBlock, Field(discriminator="type")
]


class SampleTemplate(_Model):
    """How a surviving row becomes a training sample: Jinja2 templates for each turn, and for a
    knowledge sample the chunk it was written from (`context`), kept apart so that mixing can put
    it in the user turn the way LAB trains knowledge: before the question in phase 1, among RAFT
    distractors in phase 2. Without `context` the user turn is the sample's as the template says."""

    system: str | None = None
    user: str
    assistant: str
    context: str | None = None


class AuxiliaryFlow(_Model):
    """Samples derived from the knowledge documents themselves (InstructLab's auxiliary data): per
    document chunk and per kind of rewrite in `instructions`, a row with `document`, `domain`,
    `document_outline`, `source`, `auxiliary` (the kind) and `instruction` (one of the kind's
    instructions, chosen seeded); the blocks ask the teacher to carry it out (and may judge the
    result), and each surviving row becomes a sample trained whole, in both phases."""

    instructions: dict[str, list[str]] = Field(min_length=1)
    """Per kind of rewrite (e.g. `summary`, `facts`), instructions that ask for it in other words."""
    blocks: list[Block] = Field(min_length=1)
    sample: SampleTemplate

    @model_validator(mode="after")
    def _instructions_given(self) -> AuxiliaryFlow:
        empty = [kind for kind, texts in self.instructions.items() if not texts]
        if empty:
            raise ValueError(f"auxiliary instructions {', '.join(empty)}: give at least one instruction")
        return self


class ChoiceTemplate(_Model):
    """How a surviving row becomes a multiple-choice question (a multiple-choice pipeline's
    output): Jinja2 templates for the question and each choice, and for the right answer, which
    must render to a letter (A, B, …), a number from 1, or the text of one of the choices."""

    question: str
    choices: list[str] = Field(min_length=2, max_length=10)
    answer: str


Output = Literal["sample", "choice"]
"""What a flow's rows become: training samples, or multiple-choice questions."""


class Flow(_Model):
    blocks: list[Block] = Field(min_length=1)
    sample: SampleTemplate | None = None
    choice: ChoiceTemplate | None = None

    @model_validator(mode="after")
    def _one_output(self) -> Flow:
        if (self.sample is None) == (self.choice is None):
            raise ValueError(
                "set exactly one of sample (training samples) or choice (multiple-choice questions)"
            )
        return self

    @property
    def output(self) -> Output:
        return "sample" if self.sample is not None else "choice"


class Pipeline(_Model):
    name: str
    description: str = ""
    system: str | None = None
    """System prompt of every teacher request."""
    flows: dict[LeafType, Flow] = Field(min_length=1)
    auxiliary: AuxiliaryFlow | None = None
    """Samples derived from the knowledge documents, beside the knowledge flow's."""

    def flow(self, leaf_type: LeafType, output: Output = "sample") -> Flow:
        """The flow for a leaf type; a ConfigError when there is none or it writes the other output."""
        if leaf_type not in self.flows:
            raise ConfigError(f"pipeline {self.name!r} has no flow for {leaf_type} leaves")
        flow = self.flows[leaf_type]
        if flow.output != output:
            wrote = {"sample": "training samples", "choice": "multiple-choice questions"}
            raise ConfigError(
                f"pipeline {self.name!r}: its {leaf_type} flow writes {wrote[flow.output]}, "
                f"where {wrote[output]} are needed (set `{output}:` in the flow)"
            )
        return flow

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def _inline_prompt_files(data: Any, folder: Path) -> None:
    """Replaces each block's `prompt_file` by the file's text, so a loaded pipeline is whole. Data
    of the wrong shape is left as it is, for validation to report."""
    flows = data.get("flows") if isinstance(data, dict) else None
    auxiliary = data.get("auxiliary") if isinstance(data, dict) else None
    for flow in [*(flows.values() if isinstance(flows, dict) else ()), auxiliary]:
        blocks = flow.get("blocks") if isinstance(flow, dict) else None
        for block in blocks if isinstance(blocks, list) else ():
            if isinstance(block, dict) and isinstance(block.get("prompt_file"), str):
                prompt_path = folder / block.pop("prompt_file")
                try:
                    block["prompt"] = prompt_path.read_text(encoding="utf-8")
                except OSError as error:
                    raise ConfigError(f"pipeline prompt {prompt_path}: {error.strerror}") from None
                except UnicodeDecodeError:
                    raise ConfigError(f"pipeline prompt {prompt_path} is not UTF-8 text") from None


def load(path: Path) -> Pipeline:
    """A pipeline from a YAML file; prompt files are relative to it. Problems -> ConfigError, one
    line naming the file."""
    data = read_yaml(path, "pipeline")
    _inline_prompt_files(data, path.parent)
    try:
        return Pipeline.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"pipeline {path} is invalid: {validation_problems(error)}") from None


def packaged_path(name: str) -> Path:
    """A pipeline file shipped in the package: the built-in ones and `small-teacher`."""
    return Path(str(resources.files("labtune.generator") / "pipelines" / f"{name}.yaml"))


def load_builtin(name: str) -> Pipeline:
    if name not in BUILTIN:
        raise ConfigError(f"unknown built-in pipeline {name!r}: choose one of {', '.join(BUILTIN)}")
    return load(packaged_path(name))
