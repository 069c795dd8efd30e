"""Assembly of the phase datasets the way LAB trains knowledge (InstructLab SDG's data mixing,
phases 0.7 and 1.0):

- phase 1: each knowledge sample whole — the chunk it was written from, then the question, then
  the answer, every part trained (`unmask`) — and the auxiliary samples (documents rewritten by the
  teacher), trained whole;
- phase 2: the skills samples; the knowledge samples again, as RAFT samples (the question after
  several chunks, the golden one among them only some of the time, the answer trained only) and
  whole as in phase 1; the auxiliary samples; the replay datasets; and knowledge repeated up to a
  floor share when replay data outnumbers it.

A knowledge sample without its chunk (a pipeline whose sample has no `context`) is trained as its
template says: whole in phase 1, answer only in phase 2 (`knowledge_replay`). Seeded: the same
samples and seed give the same files.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from labtune.api.synthetic_data_run_types import MixingSpec, RaftSpec, ReplayDataset
from labtune.contract.records import Message, Record, SampleMetadata, record_id

T = TypeVar("T")

GENERATED, AUXILIARY, RAFT, KNOWLEDGE_REPLAY = "generated", "auxiliary", "raft", "knowledge_replay"
"""`metadata.source` of the samples mixing makes (a replay dataset's samples carry its URI)."""


def draw(rng: random.Random, population: Sequence[T], k: int) -> list[T]:
    """k items without replacement (all of them when k exceeds the population)."""
    return rng.sample(list(population), min(k, len(population)))


def replay_size(spec: ReplayDataset, skills: int) -> int:
    if spec.samples is not None:
        return spec.samples
    return round((spec.ratio if spec.ratio is not None else 1.0) * skills)


def _with_user_prefix(messages: list[Message], prefix: str) -> list[Message]:
    """The turns with `prefix` and a blank line before the first user turn's content."""
    first = next(i for i, m in enumerate(messages) if m.role == "user")
    turn = messages[first]
    return [
        *messages[:first],
        Message(role="user", content=f"{prefix}\n\n{turn.content}"),
        *messages[first + 1 :],
    ]


def _as(
    record: Record, source: str, *, unmask: bool, messages: list[Message] | None = None, id_: str = ""
) -> Record:
    return Record(
        id=id_ or record.id,
        messages=messages if messages is not None else record.messages,
        metadata=record.metadata.model_copy(update={"source": source, "document": ""}),
        unmask=unmask,
    )


def whole(record: Record) -> Record:
    """A knowledge sample trained whole: its chunk (when kept apart) before the question."""
    document = record.metadata.document
    messages = _with_user_prefix(record.messages, document) if document else record.messages
    return _as(record, record.metadata.source or GENERATED, unmask=True, messages=messages)


def raft(record: Record, chunks: Sequence[str], spec: RaftSpec, rng: random.Random) -> Record:
    """A knowledge sample with RAFT context: `spec.documents` chunks before the question — its own
    (golden) chunk with `spec.golden_probability` and distractors from the other chunks, or only
    distractors — the answer trained only. With no other chunk the golden one is the context."""
    golden = record.metadata.document
    others = [c for c in chunks if c != golden]
    if not others:
        documents = [golden]
    elif rng.random() < spec.golden_probability:
        documents = [*draw(rng, others, spec.documents - 1), golden]
    else:
        documents = draw(rng, others, spec.documents)
    rng.shuffle(documents)
    context = "\n".join(f"Document:\n{d}\n\n" for d in documents)
    messages = _with_user_prefix(record.messages, context)
    return _as(record, RAFT, unmask=False, messages=messages, id_=record_id(record.id, RAFT))


def _as_replay(record: Record, uri: str, index: int) -> Record:
    return Record(
        id=record.id or record_id(uri, str(index)),
        messages=record.messages,
        metadata=SampleMetadata(source=uri),
        unmask=record.unmask,
    )


def floor_copies(rng: random.Random, knowledge: Sequence[Record], others: int, floor: float) -> list[Record]:
    """Knowledge records drawn again (with replacement) until they are at least `floor` of a
    dataset that holds `others` other records; none when there is no knowledge to repeat."""
    if not knowledge or floor <= 0:
        return []
    needed = math.ceil(floor * others / (1 - floor) - 1e-9) - len(knowledge)
    copies = rng.choices(list(knowledge), k=max(0, needed))
    return [r.model_copy(update={"id": record_id(r.id, "upsampled", str(i))}) for i, r in enumerate(copies)]


@dataclass(frozen=True)
class Mixed:
    phase1: list[Record]
    """The knowledge dataset."""
    phase2: list[Record]
    """The skills dataset."""
    upsampled: int
    """Knowledge records of phase 2 repeated to reach the floor."""


def mix(
    knowledge: list[Record],
    skills: list[Record],
    auxiliary: list[Record],
    spec: MixingSpec,
    replays: list[list[Record]],
    seed: int,
) -> Mixed:
    """The phase datasets from the generated knowledge, skills and auxiliary samples; `replays`
    follow `spec.replay`."""
    rng = random.Random(seed)
    chunks = list(dict.fromkeys(r.metadata.document for r in knowledge if r.metadata.document))
    trained_whole = [whole(r) for r in knowledge] + [_as(r, AUXILIARY, unmask=True) for r in auxiliary]
    phase1 = list(trained_whole)
    rng.shuffle(phase1)

    lab = [(r, w) for r, w in zip(knowledge, trained_whole, strict=False) if r.metadata.document]
    legacy = [r for r in knowledge if not r.metadata.document]
    knowledge_part = [raft(r, chunks, spec.raft, rng) for r, _ in lab] + [w for _, w in lab]
    knowledge_part += [_as(r, KNOWLEDGE_REPLAY, unmask=False) for r in legacy]
    knowledge_part += trained_whole[len(knowledge) :]  # the auxiliary samples
    if spec.knowledge_replay_ratio is not None:
        knowledge_part = draw(rng, knowledge_part, round(spec.knowledge_replay_ratio * len(skills)))
    phase2 = list(skills) + knowledge_part
    for replay_spec, records in zip(spec.replay, replays, strict=True):
        indexed = list(enumerate(records))
        for index, record in draw(rng, indexed, replay_size(replay_spec, len(skills))):
            phase2.append(_as_replay(record, replay_spec.uri, index))
    copies = floor_copies(rng, knowledge_part, len(phase2) - len(knowledge_part), spec.knowledge_floor)
    phase2 += copies
    rng.shuffle(phase2)
    return Mixed(phase1, phase2, len(copies))
