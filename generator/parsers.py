"""Output parsers: turn one teacher reply into zero or more records of named fields. A reply that
yields nothing usable is malformed: the caller drops it and counts it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Fields = dict[str, str]


class _Parser(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextParser(_Parser):
    """The whole reply, stripped, into one field."""

    type: Literal["text"]
    field: str

    def parse(self, text: str) -> list[Fields]:
        value = text.strip()
        return [{self.field: value}] if value else []


class TaggedParser(_Parser):
    """Records marked with tags, e.g. `[QUESTION] … [ANSWER] … [END]`: the reply is split at
    `separator`, and each part yields a record when every tag is found with text after it."""

    type: Literal["tagged"]
    fields: dict[str, str] = Field(min_length=1)
    """Field name -> the tag that starts its text."""
    separator: str | None = None
    """Tag that ends one record (several records per reply); one record per reply when unset."""

    def parse(self, text: str) -> list[Fields]:
        parts = text.split(self.separator) if self.separator else [text]
        return [record for part in parts if (record := self._record(part))]

    def _record(self, part: str) -> Fields | None:
        positions = {name: part.find(tag) for name, tag in self.fields.items()}
        if any(p < 0 for p in positions.values()):
            return None
        order = sorted(positions, key=lambda name: positions[name])
        record = {}
        for name, following in zip(order, [*order[1:], None], strict=True):
            start = positions[name] + len(self.fields[name])
            end = positions[following] if following else len(part)
            record[name] = part[start:end].strip()
        return record if all(record.values()) else None


class ScoreParser(_Parser):
    """A number found by a regular expression (its first group; the last match wins, so a judge
    may reason before it states the score)."""

    type: Literal["score"]
    field: str
    pattern: str = r"(?i)score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)"

    def parse(self, text: str) -> list[Fields]:
        matches = re.findall(self.pattern, text)
        return [{self.field: matches[-1]}] if matches else []


Parser = Annotated[TextParser | TaggedParser | ScoreParser, Field(discriminator="type")]
