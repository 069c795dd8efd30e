"""Assembly of the phase datasets: phase 1 is the knowledge samples trained on the whole
sequence; phase 2 is the skills samples plus knowledge replay and precomputed replay datasets.
Seeded: the same samples and seed give the same files."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from labtune.api.synthetic_data_run_types import MixingSpec, ReplayDataset
from labtune.contract.records import Record, SampleMetadata, record_id

T = TypeVar("T")


def draw(rng: random.Random, population: Sequence[T], k: int) -> list[T]:
    """k items without replacement (all of them when k exceeds the population)."""
    return rng.sample(list(population), min(k, len(population)))


def replay_size(spec: ReplayDataset, skills: int) -> int:
    if spec.samples is not None:
        return spec.samples
    return round((spec.ratio if spec.ratio is not None else 1.0) * skills)


def _as_replay(record: Record, uri: str, index: int) -> Record:
    return Record(
        id=record.id or record_id(uri, str(index)),
        messages=record.messages,
        metadata=SampleMetadata(source=uri),
        unmask=record.unmask,
    )


def mix(
    knowledge: list[Record],
    skills: list[Record],
    spec: MixingSpec,
    replays: list[list[Record]],
    seed: int,
) -> tuple[list[Record], list[Record]]:
    """(phase-1 knowledge dataset, phase-2 skills dataset); `replays` follow `spec.replay`."""
    rng = random.Random(seed)
    phase1 = [r.model_copy(update={"unmask": True}) for r in knowledge]
    rng.shuffle(phase1)
    phase2 = list(skills)
    replayed = draw(rng, knowledge, round(spec.knowledge_replay_ratio * len(skills)))
    phase2 += [
        r.model_copy(
            update={"unmask": False, "metadata": r.metadata.model_copy(update={"source": "knowledge_replay"})}
        )
        for r in replayed
    ]
    for replay_spec, records in zip(spec.replay, replays, strict=True):
        indexed = list(enumerate(records))
        for index, record in draw(rng, indexed, replay_size(replay_spec, len(skills))):
            phase2.append(_as_replay(record, replay_spec.uri, index))
    rng.shuffle(phase2)
    return phase1, phase2
