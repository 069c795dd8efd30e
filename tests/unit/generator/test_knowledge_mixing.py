"""Mixing of the phase datasets the way LAB trains knowledge: knowledge samples whole with their
chunk (phase 1 and 2), RAFT samples with distractors (phase 2, seeded, the golden chunk at the
configured rate), auxiliary samples, replay, the upsampling floor; and the template-only form of
a pipeline whose knowledge samples keep no chunk apart."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from labtune.api.synthetic_data_run_types import MixingSpec, RaftSpec, ReplayDataset
from labtune.contract.records import Message, Record, SampleMetadata
from labtune.generator.mixing import mix, raft, whole


def _records(kind: str, n: int, *, chunks: int = 0) -> list[Record]:
    """n samples; knowledge ones written from `chunks` different chunks (0: none kept apart)."""
    return [
        Record(
            id=f"{kind}{i}",
            messages=[
                Message(role="user", content=f"question {kind}{i}"),
                Message(role="assistant", content="a"),
            ],
            metadata=SampleMetadata(
                source="generated",
                leaf_type="knowledge" if kind == "k" else "freeform_skill",
                document=f"chunk {i % chunks}" if chunks else "",
            ),
        )
        for i in range(n)
    ]


def _replay(n: int) -> list[Record]:
    return [
        Record(messages=[Message(role="user", content=f"r {i}"), Message(role="assistant", content="a")])
        for i in range(n)
    ]


def _user(record: Record) -> str:
    return next(m.content for m in record.messages if m.role == "user")


def test_a_knowledge_sample_is_trained_whole_with_its_chunk_before_the_question() -> None:
    (sample,) = _records("k", 1, chunks=1)
    assembled = whole(sample)
    assert _user(assembled) == "chunk 0\n\nquestion k0"
    assert assembled.unmask
    assert (assembled.metadata.source, assembled.metadata.document) == ("generated", "")  # not repeated


def test_raft_context_holds_the_golden_chunk_at_the_configured_rate_and_is_seeded() -> None:
    samples = _records("k", 2000, chunks=10)
    chunks = [f"chunk {i}" for i in range(10)]
    spec = RaftSpec(documents=4, golden_probability=0.4)
    rng = random.Random(7)
    made = [raft(s, chunks, spec, rng) for s in samples]
    golden = [f"Document:\n{s.metadata.document}\n\n" in _user(r) for s, r in zip(samples, made, strict=True)]
    assert 0.37 < sum(golden) / len(golden) < 0.43
    for record in made:
        context, question = _user(record).rsplit("\n\n", 1)
        assert context.count("Document:\n") == 4  # the golden one and 3 distractors, or 4 distractors
        assert len(set(context.split("Document:\n"))) == 5  # no chunk twice ('' before the first)
        assert question.startswith("question k")
        assert not record.unmask  # the answer only
        assert record.metadata.source == "raft"
    again = random.Random(7)
    assert [raft(s, chunks, spec, again) for s in samples[:50]] == made[:50]


def test_raft_with_one_chunk_in_all_is_the_golden_chunk_alone() -> None:
    (sample,) = _records("k", 1, chunks=1)
    record = raft(sample, ["chunk 0"], RaftSpec(), random.Random(0))
    assert _user(record) == "Document:\nchunk 0\n\n\n\nquestion k0"


def test_the_phases_hold_each_source_as_lab_mixes_them() -> None:
    knowledge, skills = _records("k", 12, chunks=3), _records("s", 20)
    auxiliary = [r.model_copy(update={"id": f"aux{r.id}"}) for r in _records("k", 3, chunks=3)]
    mixed = mix(knowledge, skills, auxiliary, MixingSpec(), [], seed=1)
    assert Counter(r.metadata.source for r in mixed.phase1) == {"generated": 12, "auxiliary": 3}
    assert all(r.unmask for r in mixed.phase1)
    assert all(_user(r).startswith("chunk ") for r in mixed.phase1 if r.metadata.source == "generated")
    # Phase 2: the skills, each knowledge sample as RAFT and whole, the auxiliary samples.
    assert Counter(r.metadata.source for r in mixed.phase2) == {"generated": 32, "raft": 12, "auxiliary": 3}
    trained_whole = {r.id for r in mixed.phase2 if r.unmask}
    assert trained_whole == {r.id for r in mixed.phase1}
    assert len({r.id for r in mixed.phase2}) == len(mixed.phase2)
    assert mixed.upsampled == 0


def test_a_knowledge_replay_ratio_draws_from_the_knowledge_part() -> None:
    knowledge, skills = _records("k", 30, chunks=5), _records("s", 10)
    mixed = mix(knowledge, skills, [], MixingSpec(knowledge_replay_ratio=0.5), [], seed=3)
    sources = Counter(r.metadata.source for r in mixed.phase2 if r.metadata.leaf_type == "knowledge")
    assert sum(sources.values()) == 5


@pytest.mark.parametrize(("floor", "replay", "expected"), [(0.03, 1000, 12), (0.0, 1000, 0), (0.03, 50, 0)])
def test_knowledge_is_upsampled_to_the_floor_when_replay_outnumbers_it(
    floor: float, replay: int, expected: int
) -> None:
    knowledge, skills = _records("k", 10, chunks=5), _records("s", 10)
    spec = MixingSpec(knowledge_floor=floor, replay=[ReplayDataset(uri="pvc://c/r.jsonl", samples=replay)])
    mixed = mix(knowledge, skills, [], spec, [_replay(replay)], seed=0)
    part = [r for r in mixed.phase2 if r.metadata.leaf_type == "knowledge"]
    assert mixed.upsampled == expected
    assert len(part) == 20 + expected
    if floor:
        assert len(part) / len(mixed.phase2) >= floor
    if expected:
        assert (len(part) - 1) / (len(mixed.phase2) - 1) < floor  # the least that reaches it
    assert len({r.id for r in mixed.phase2}) == len(mixed.phase2)  # copies have ids of their own


def test_knowledge_kept_in_the_template_is_trained_whole_then_replayed_answer_only() -> None:
    knowledge, skills = _records("k", 30), _records("s", 10)
    spec = MixingSpec(knowledge_replay_ratio=0.5, replay=[ReplayDataset(uri="pvc://c/r.jsonl", ratio=2.0)])
    mixed = mix(knowledge, skills, [], spec, [_replay(100)], seed=3)
    assert sorted(r.id for r in mixed.phase1) == sorted(r.id for r in knowledge)
    assert all(r.unmask and _user(r).startswith("question") for r in mixed.phase1)
    sources = Counter(r.metadata.source for r in mixed.phase2)
    assert sources == {"generated": 10, "knowledge_replay": 5, "pvc://c/r.jsonl": 20}
    assert not any(r.unmask for r in mixed.phase2)


def test_mixing_is_seeded() -> None:
    knowledge, skills = _records("k", 30, chunks=6), _records("s", 10)
    spec = MixingSpec(replay=[ReplayDataset(uri="r", samples=4)])
    first = mix(knowledge, skills, [], spec, [_replay(20)], seed=1)
    assert first == mix(knowledge, skills, [], spec, [_replay(20)], seed=1)
    assert first != mix(knowledge, skills, [], spec, [_replay(20)], seed=2)
