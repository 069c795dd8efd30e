"""The dataset record of the pod contract: one training sample in the messages format InstructLab's
training library reads, `{id, messages, metadata, unmask}` (snake_case, as that library's files
are). `labtune generate` writes it; `labtune train` reads it — and reads InstructLab SDG's
`knowledge_train_msgs` / `skills_train_msgs` files through the same model.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# InstructLab SDG's phase-1 knowledge records carry one `pretraining` message holding the whole
# exchange as "<|user|>\n…\n<|assistant|>\n…" (or Granite's start_of_role form); InstructLab's
# training library unrolls it into user/assistant turns trained whole, and so does this.
_PRETRAINING_TURN = re.compile(r"<\|(?:start_of_role\|>)?(user|assistant)(?:<\|end_of_role)?\|>\n")
_PRETRAINING_END = ("<|endoftext|>", "<|end_of_text|>")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class SampleMetadata(BaseModel):
    """Where a sample came from. labtune writes every key on every record, so a file has one schema
    for datasets' JSON loader; keys of other writers (InstructLab SDG's) are read past."""

    model_config = ConfigDict(extra="ignore")

    source: str = ""
    """`generated`, `auxiliary`, `raft`, `knowledge_replay`, or the URI of a replay dataset."""
    leaf: str = ""
    leaf_type: str = ""
    pipeline: str = ""
    teacher: str = ""
    taxonomy_commit: str = ""
    document: str = ""
    """The chunk a generated knowledge sample was written from, kept apart from its turns until the
    datasets are mixed (which put it in the user turn, alone or among RAFT distractors); empty in
    the datasets themselves, where it would only repeat the user turn."""


class Record(BaseModel):
    """One training sample: `unmask` trains on every message but the system prompt (phase-1
    knowledge), otherwise only the assistant turns are trained."""

    model_config = ConfigDict(extra="ignore")

    id: str = ""
    """Stable across runs of the same inputs (see record_id); empty in a replay dataset that has none."""
    messages: list[Message] = Field(min_length=1)
    metadata: SampleMetadata = Field(default_factory=SampleMetadata)
    unmask: bool = False

    @model_validator(mode="before")
    @classmethod
    def _read_instructlab_forms(cls, data: object) -> object:
        """InstructLab SDG writes metadata as a JSON string and phase-1 knowledge as one
        `pretraining` message; both become this model's form."""
        if not isinstance(data, dict):
            return data
        if isinstance(data.get("metadata"), str):
            data = {**data, "metadata": _metadata_object(data["metadata"])}
        messages = data.get("messages")
        if not isinstance(messages, list):
            return data
        if not any(isinstance(m, dict) and m.get("role") == "pretraining" for m in messages):
            return data
        unrolled: list[object] = []
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "pretraining":
                unrolled.extend(_pretraining_turns(str(message.get("content", ""))))
            else:
                unrolled.append(message)
        return {**data, "messages": unrolled, "unmask": True}

    @model_validator(mode="after")
    def _has_assistant_turn(self) -> Record:
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError("the sample has no assistant turn")
        return self


def _metadata_object(text: str) -> object:
    try:
        found = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def _pretraining_turns(text: str) -> list[dict[str, str]]:
    parts = _PRETRAINING_TURN.split(text)
    turns = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        for end in _PRETRAINING_END:
            content = content.replace(end, "")
        turns.append({"role": role, "content": content.removesuffix("\n")})
    return turns


def record_id(*parts: str) -> str:
    """A record's id from what decides it: the same inputs give the same id in every run."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]
