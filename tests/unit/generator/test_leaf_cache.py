"""The leaf cache: a later run reuses every unchanged leaf's samples and asks the teacher only for
the rest, with datasets byte-identical to a from-scratch run's; Regenerate replaces entries; the
size bound evicts the least recently used; damaged entries are misses; and runs at once never see
half an entry."""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labtune.contract.generate import GenerateConfig, GenerateSummary
from labtune.contract.records import Record
from labtune.generator.checkpoints import LeafResult
from labtune.generator.leaf_cache import LeafCache, cache_key
from labtune.generator.run import generate
from labtune.generator.teacher import CompletionRequest

if TYPE_CHECKING:
    from conftest import FakeTeacher, Git, SampleTaxonomy

MakeConfig = Callable[..., GenerateConfig]

DATASETS = ("knowledge.jsonl", "skills.jsonl", "evaluation.jsonl", "evaluation-choices.jsonl")
HAIKU = "compositional_skills/writing/haiku/qna.yaml"


def _config(
    make_config: MakeConfig, sample: SampleTaxonomy, where: Path, name: str, **overrides: Any
) -> GenerateConfig:
    """The full pipeline with every flow (training, auxiliary, multiple choice) and a held-out
    seed, writing to `where/name`, with the cache in `where/cache`."""
    settings: dict[str, Any] = {
        "pipeline": {"builtin": "full"},
        "evaluation": {"heldOutSeeds": 1},
        "multipleChoice": {"questionsPerChunk": 2},
        "cache": {"uri": str(where / "cache")},
        "output": str(where / name),
        **overrides,
    }
    return make_config(sample, **settings)


def _files(config: GenerateConfig) -> dict[str, bytes]:
    return {name: (Path(config.output) / name).read_bytes() for name in DATASETS}


def _run(config: GenerateConfig, teacher: FakeTeacher) -> GenerateSummary:
    return generate(config, teacher=teacher)


def test_an_unchanged_taxonomy_asks_the_teacher_nothing(
    sample_taxonomy: SampleTaxonomy,
    tmp_path: Path,
    make_config: MakeConfig,
    fake_teacher: type[FakeTeacher],
) -> None:
    first_teacher = fake_teacher()
    first = _run(_config(make_config, sample_taxonomy, tmp_path, "a"), first_teacher)
    assert first.cost.model_dump() == {
        "leaves_generated": 3,
        "leaves_reused": 0,
        "prompt_tokens": sum(len(r.prompt) // 4 for r in first_teacher.requests),
        "completion_tokens": 8 * len(first_teacher.requests),
    }

    second_teacher = fake_teacher(fail_after=0)  # any request fails the run
    config = _config(make_config, sample_taxonomy, tmp_path, "b")
    second = _run(config, second_teacher)
    assert second.cost.model_dump() == {
        "leaves_generated": 0,
        "leaves_reused": 3,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }
    assert _files(config) == _files(_config(make_config, sample_taxonomy, tmp_path, "a"))
    assert second.stages == first.stages
    report = (Path(config.output) / "report.json").read_text()
    assert '"cache":{"training":{"reused":3,"generated":0}' in report.replace(" ", "").replace("\n", "")


def test_one_changed_leaf_is_generated_and_the_datasets_match_a_run_from_scratch(
    sample_taxonomy: SampleTaxonomy,
    tmp_path: Path,
    make_config: MakeConfig,
    fake_teacher: type[FakeTeacher],
    git: type[Git],
) -> None:
    _run(_config(make_config, sample_taxonomy, tmp_path, "before"), fake_teacher())
    haiku = sample_taxonomy.root / HAIKU
    haiku.write_text(haiku.read_text().replace("the sea.", "the harbour."))
    commit = git.commit_all(sample_taxonomy.root, "one leaf changes")
    changed = sample_taxonomy.__class__(
        sample_taxonomy.root, commit, sample_taxonomy.documents, sample_taxonomy.documents_commit
    )
    pinned = {"taxonomy": {"url": str(changed.root), "commit": commit}}

    teacher = fake_teacher()
    incremental = _config(make_config, changed, tmp_path, "after", **pinned)
    summary = _run(incremental, teacher)
    assert (summary.cost.leaves_generated, summary.cost.leaves_reused) == (1, 2)
    assert teacher.requests
    assert all("harbour" in r.prompt or "haiku" in r.prompt for r in teacher.requests)

    scratch_teacher = fake_teacher()
    scratch = _config(make_config, changed, tmp_path, "scratch", cache=None, **pinned)
    _run(scratch, scratch_teacher)
    assert _files(incremental) == _files(scratch)
    assert summary.cost.prompt_tokens < sum(len(r.prompt) // 4 for r in scratch_teacher.requests) / 2
    records = [Record.model_validate_json(line) for line in _files(incremental)["skills.jsonl"].splitlines()]
    assert {r.metadata.taxonomy_commit for r in records} == {commit}


def test_regenerate_asks_for_every_leaf_and_replaces_the_entries(
    sample_taxonomy: SampleTaxonomy,
    tmp_path: Path,
    make_config: MakeConfig,
    fake_teacher: type[FakeTeacher],
) -> None:
    first_teacher = fake_teacher()
    _run(_config(make_config, sample_taxonomy, tmp_path, "a"), first_teacher)

    base = fake_teacher().reply

    def changed_teacher(request: CompletionRequest) -> str | None:
        reply = base(request)
        return reply.replace("Answer ", "New answer ") if reply else reply

    regenerate = {"cache": {"uri": str(tmp_path / "cache"), "reuse": False}}
    second_teacher = fake_teacher(reply=changed_teacher)
    renewed = _config(make_config, sample_taxonomy, tmp_path, "b", **regenerate)
    summary = _run(renewed, second_teacher)
    assert (summary.cost.leaves_generated, summary.cost.leaves_reused) == (3, 0)
    assert len(second_teacher.requests) == len(first_teacher.requests)

    reused = _config(make_config, sample_taxonomy, tmp_path, "c")
    _run(reused, fake_teacher(fail_after=0))
    assert _files(reused) == _files(renewed) != _files(_config(make_config, sample_taxonomy, tmp_path, "a"))


def test_a_changed_input_beyond_the_leaf_misses(
    sample_taxonomy: SampleTaxonomy,
    tmp_path: Path,
    make_config: MakeConfig,
    fake_teacher: type[FakeTeacher],
) -> None:
    _run(_config(make_config, sample_taxonomy, tmp_path, "a"), fake_teacher())
    for name, change in (
        ("seed", {"scale": {"samplesPerSeed": 2, "chunkTokens": 128, "seed": 8}}),
        (
            "teacher",
            {"teacher": {"model": "fake-teacher", "url": "http://127.0.0.1:1/v1", "api": "completions"}},
        ),
        ("held-out", {"evaluation": {"heldOutSeeds": 2}}),
    ):
        summary = _run(_config(make_config, sample_taxonomy, tmp_path, name, **change), fake_teacher())
        assert (summary.cost.leaves_generated, summary.cost.leaves_reused) == (3, 0), name


def _turns(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": "answer"}]


def _result(key: str) -> LeafResult:
    return LeafResult(path=key, leaf_type="freeform_skill", stages=[], samples=2)


def _samples(key: str, size: int = 2) -> list[Record]:
    return [Record.model_validate({"id": f"{key}-{i}", "messages": _turns(key * size)}) for i in range(2)]


def _put(cache: LeafCache, key: str, mtime: float, size: int = 2) -> None:
    cache.put(key, _result(key), _samples(key, size))
    os.utime(cache.root / key[:2] / key / "entry.json", (mtime, mtime))


def test_the_size_bound_evicts_the_least_recently_used_entries_the_run_did_not_use(
    tmp_path: Path,
) -> None:
    keys = [cache_key("test", str(i)) for i in range(4)]
    _put(LeafCache(tmp_path, 0), keys[0], 1000)
    _put(LeafCache(tmp_path, 0), keys[1], 2000)
    _put(LeafCache(tmp_path, 0), keys[2], 3000)
    _put(LeafCache(tmp_path, 0), keys[3], 500)
    entry_bytes = sum(f.stat().st_size for f in (tmp_path / keys[1][:2] / keys[1]).iterdir())

    cache = LeafCache(tmp_path, max_bytes=2 * entry_bytes)
    assert cache.get(keys[3], Record) is not None  # the oldest, but this run uses it
    assert cache.prune() == 2 * entry_bytes
    left = {p.name for shard in tmp_path.iterdir() if shard.name != "tmp" for p in shard.iterdir()}
    assert left == {keys[2], keys[3]}
    assert LeafCache(tmp_path, 0).prune() == 2 * entry_bytes  # a bound of 0 empties it


def test_a_damaged_entry_is_a_miss_and_is_evicted(tmp_path: Path) -> None:
    key = cache_key("test", "damaged")
    cache = LeafCache(tmp_path, 10**9)
    cache.put(key, _result(key), _samples(key))
    samples = tmp_path / key[:2] / key / "samples.jsonl"
    samples.write_text(samples.read_text().replace("answer", "Answer", 1))
    assert cache.get(key, Record) is None
    assert not (tmp_path / key[:2] / key).exists()
    cache.put(key, _result(key), _samples(key))
    assert cache.get(key, Record) == (_result(key), _samples(key))


def _versioned(key: str, version: int) -> tuple[LeafResult, list[Record]]:
    """An entry whose every file says which write made it, so that a read mixing two is seen."""
    samples = [
        Record.model_validate({"id": f"{key}-{version}-{i}", "messages": _turns("x" * 4000)})
        for i in range(2)
    ]
    return LeafResult(path=f"{key}/{version}", leaf_type="freeform_skill", stages=[], samples=2), samples


def _hammer(root: str, seed: int, rounds: int, errors: Any) -> None:
    """One of several processes putting (some regenerating), reading and evicting the same few
    keys at once."""
    rng = random.Random(seed)
    keys = [cache_key("race", str(i)) for i in range(6)]
    try:
        for _ in range(rounds):
            cache = LeafCache(Path(root), max_bytes=0, read=rng.random() < 0.8)
            key = rng.choice(keys)
            action = rng.random()
            if action < 0.4:
                cache.put(key, *_versioned(key, rng.randrange(1000)))
            elif action < 0.9:
                cache.read = True
                hit = cache.get(key, Record)
                if hit is not None and hit != _versioned(key, int(hit[0].path.rsplit("/", 1)[1])):
                    errors.put(f"torn read of {key}: {hit[0].path} with {hit[1][0].id}")
            else:
                cache.prune()  # bound 0: evicts every entry this process did not just use
    except Exception as error:  # reported to the test, which fails with it
        errors.put(repr(error))


def test_runs_at_once_never_see_half_an_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    workers = [context.Process(target=_hammer, args=(str(tmp_path), i, 300, errors)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    cache = LeafCache(tmp_path, 0)
    for key in (cache_key("race", str(i)) for i in range(6)):
        hit = cache.get(key, Record)
        assert hit is None or hit == _versioned(key, int(hit[0].path.rsplit("/", 1)[1]))
