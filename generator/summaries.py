"""Termination-log summaries that always fit the kubelet's 4 KiB: lists are shortened (their
counts stay exact in other fields) until the JSON fits."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel

from labtune.contract import SUMMARY_LIMIT_BYTES

SummaryT = TypeVar("SummaryT", bound=BaseModel)


def _size(summary: BaseModel) -> int:
    data = summary.model_dump(mode="json", by_alias=True, exclude_none=True)
    return len(json.dumps(data, separators=(",", ":")).encode())


def fit(summary: SummaryT, list_fields: tuple[str, ...]) -> SummaryT:
    """A copy of `summary` whose `list_fields` are cut (the longest first) until it fits."""
    while _size(summary) > SUMMARY_LIMIT_BYTES:
        lengths = {name: len(getattr(summary, name)) for name in list_fields}
        longest = max(lengths, key=lambda name: lengths[name])
        if lengths[longest] == 0:
            raise ValueError("summary does not fit the termination log even with every list emptied")
        summary = summary.model_copy(update={longest: getattr(summary, longest)[: lengths[longest] // 2]})
    return summary
