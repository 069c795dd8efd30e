"""Runs pipeline blocks over rows (dicts of fields) with a teacher, counting what each stage
keeps, drops as malformed, or loses to a teacher rejection."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel

from labtune.contract import ConfigError
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.pipeline import (
    Block,
    CombineBlock,
    DedupeBlock,
    FlattenBlock,
    GenerateBlock,
    JudgeBlock,
    SampleTemplate,
)
from labtune.generator.teacher import Completion, CompletionRequest, Teacher

Row = dict[str, Any]

# Custom pipelines come from users' ConfigMaps: their templates run sandboxed.
_JINJA = SandboxedEnvironment(
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
)


class StageCount(BaseModel):
    """What one block did to a leaf's rows."""

    stage: str
    input: int
    output: int
    malformed: int = 0
    """Teacher replies the parser could not read (dropped)."""
    rejected: int = 0
    """Requests the teacher refused (dropped)."""


@lru_cache(maxsize=256)
def _template(source: str) -> Callable[..., str]:
    return _JINJA.from_string(source).render


def render(source: str, row: Row, where: str) -> str:
    """Renders a template over a row; a template error is a configuration error naming `where`."""
    try:
        return _template(source)(**row).strip()
    except TemplateError as error:
        raise ConfigError(f"{where}: template error: {error}") from None


def request_seed(*parts: object) -> int:
    """A per-request seed derived from the run seed and the request's place: stable across restarts."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class Engine:
    teacher: Teacher
    metrics: GeneratorMetrics
    system: str | None
    seed: int
    samples_per_seed: int

    async def run(self, block: Block, rows: list[Row], salt: str) -> tuple[list[Row], StageCount]:
        """Runs one block; `salt` (the leaf) varies the request seeds between leaves."""
        self.metrics.samples_in.labels(block.name).inc(len(rows))
        if isinstance(block, GenerateBlock):
            out, count = await self._generate(block, rows, salt)
        elif isinstance(block, JudgeBlock):
            out, count = await self._judge(block, rows, salt)
        elif isinstance(block, DedupeBlock):
            out, count = dedupe(block, rows), StageCount(stage=block.name, input=len(rows), output=0)
        elif isinstance(block, FlattenBlock):
            out, count = flatten(block, rows), StageCount(stage=block.name, input=len(rows), output=0)
        else:
            out, count = combine(block, rows), StageCount(stage=block.name, input=len(rows), output=0)
        count.output = len(out)
        self.metrics.samples_out.labels(block.name).inc(len(out))
        self.metrics.errors.labels("malformed_reply").inc(count.malformed)
        return out, count

    async def _ask(
        self, block: GenerateBlock | JudgeBlock, rows: list[Row], salt: str, n: int
    ) -> list[tuple[int, Completion]]:
        """Sends n requests per row at once; returns (row index, completion) pairs."""
        requests, owners = [], []
        for index, row in enumerate(rows):
            prompt = render(block.prompt or "", row, f"block {block.name!r}")
            for k in range(n):
                requests.append(
                    CompletionRequest(
                        prompt=prompt,
                        system=self.system,
                        max_tokens=block.max_tokens,
                        temperature=block.temperature,
                        seed=request_seed(self.seed, salt, block.name, index, k),
                    )
                )
                owners.append(index)
        completions = await self.teacher.complete(requests)
        for completion in completions:  # here, not in each backend: every teacher is counted alike
            self.metrics.record_tokens(completion.prompt_tokens, completion.completion_tokens)
        return list(zip(owners, completions, strict=True))

    async def _generate(
        self, block: GenerateBlock, rows: list[Row], salt: str
    ) -> tuple[list[Row], StageCount]:
        n = self.samples_per_seed if block.n == "samples_per_seed" else block.n
        count = StageCount(stage=block.name, input=len(rows), output=0)
        out: list[Row] = []
        for owner, completion in await self._ask(block, rows, salt, n):
            if completion.text is None:
                count.rejected += 1
                continue
            records = block.parser.parse(completion.text)
            if not records:
                count.malformed += 1
            out.extend({**rows[owner], **record} for record in records)
        return out, count

    async def _judge(self, block: JudgeBlock, rows: list[Row], salt: str) -> tuple[list[Row], StageCount]:
        count = StageCount(stage=block.name, input=len(rows), output=0)
        out: list[Row] = []
        for owner, completion in await self._ask(block, rows, salt, 1):
            if completion.text is None:
                count.rejected += 1
                continue
            records = block.parser.parse(completion.text)
            if not records:
                count.malformed += 1
                continue
            score = float(records[0][block.parser.field])
            if score >= block.threshold:
                out.append({**rows[owner], block.parser.field: score})
        return out, count


def _normalized(value: Any) -> str:
    return " ".join(str(value).lower().split())


def dedupe(block: DedupeBlock, rows: list[Row]) -> list[Row]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for row in rows:
        key = tuple(_normalized(row.get(f, "")) for f in block.fields)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def flatten(block: FlattenBlock, rows: list[Row]) -> list[Row]:
    out = []
    for row in rows:
        for item in row.get(block.field) or []:
            out.append({**row, **item} if isinstance(item, dict) else {**row, block.field: item})
    return out


def combine(block: CombineBlock, rows: list[Row]) -> list[Row]:
    return [{**row, block.field: render(block.template, row, f"block {block.name!r}")} for row in rows]


def to_messages(template: SampleTemplate, row: Row, where: str) -> list[dict[str, str]]:
    """The chat turns of a training sample made from a row."""
    turns = [("system", template.system), ("user", template.user), ("assistant", template.assistant)]
    return [{"role": role, "content": render(source, row, where)} for role, source in turns if source]
