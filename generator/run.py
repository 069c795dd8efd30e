"""A SyntheticDataRun (`labtune generate --config FILE`, or `generate(config)` as a library):
check out the taxonomy at the pinned commit, build each selected leaf's seed rows, run the
pipeline per leaf with checkpoints, mix the phase datasets and write them with a report."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from labtune.api.synthetic_data_run_types import (
    DatasetOutput,
    GenerationCost,
    GenerationOutputs,
    LeafFailure,
)
from labtune.contract import ConfigError, resolve_artifact
from labtune.contract.common import LeafType, fit, output_path
from labtune.contract.evaluate import ChoiceExample, EvalExample
from labtune.contract.generate import (
    GenerateConfig,
    GenerateSummary,
    LeafSummary,
    PipelineRef,
    ShardSummary,
    TeacherConfig,
)
from labtune.contract.records import Record, SampleMetadata, record_id
from labtune.generator import gitrepo, holdout, pipeline, shards
from labtune.generator.checkpoints import LeafCheckpoint, LeafResult
from labtune.generator.choices import to_choices
from labtune.generator.chunking import TokenCounter, approximate_tokens
from labtune.generator.documents import Document, DocumentSource, fetch
from labtune.generator.engine import Engine, Row, StageCount, render, to_messages
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.jsonl_files import read_replay, write_jsonl
from labtune.generator.leaf_cache import LeafCache, cache_key
from labtune.generator.mixing import AUXILIARY, GENERATED, Mixed, mix
from labtune.generator.pipeline import AuxiliaryFlow, Flow, GenerateBlock, Pipeline, SampleTemplate
from labtune.generator.seeds import KnowledgeQna, auxiliary_rows, chunk_rows, rows_for
from labtune.generator.taxonomy_scan import EMPTY_BASE, scan
from labtune.generator.teacher import Completion, CompletionRequest, Teacher, make_teacher

log = logging.getLogger(__name__)


CHOICE_STAGES = "multipleChoice"
"""The prefix of the multiple-choice pipeline's stages in the summary's stage counts."""

TRAINING, CHOICES, AUXILIARY_FLOW = "training", "choices", "auxiliary"
"""The flows' folders in the checkpoints, the leaf cache and a shard's outcome."""


class GenerationError(Exception):
    """The run could not produce its datasets (e.g. nothing survived a leaf's filters)."""


@dataclass(frozen=True)
class LeafJob:
    path: str
    leaf_type: LeafType
    rows: list[Row]
    fingerprint: str


class Report(BaseModel):
    """The full record of a run, written next to the datasets."""

    taxonomy_commit: str
    teacher_model: str
    pipeline: str
    leaves: list[LeafResult]
    failures: list[LeafFailure]
    held_out: list[holdout.HeldOutLeaf]
    """The seed examples held back from the teacher, per leaf (empty when none were)."""
    choices: list[LeafResult] = []
    """The multiple-choice pipeline's stages per knowledge leaf (evaluation.multipleChoice)."""
    choice_failures: list[LeafFailure] = []
    """Knowledge leaves of which no multiple-choice question survived, and why."""
    auxiliary: list[LeafResult] = []
    """The pipeline's auxiliary flow's stages per knowledge leaf."""
    auxiliary_failures: list[LeafFailure] = []
    """Knowledge leaves of which no auxiliary sample survived, and why."""
    mixing: dict[str, dict[str, int]] = {}
    """Records of each phase dataset by source, and `upsampled` (mixing.knowledgeFloor)."""
    cache: dict[str, dict[str, int]] = {}
    """Leaves per flow (training, choices, auxiliary) `reused` from the leaf cache or `generated`."""


def teacher_identity(config: TeacherConfig, teacher: Teacher) -> str:
    """What names the teacher's outputs in checkpoint and cache keys."""
    return f"{config.backend}/{config.api}/{config.identity or teacher.model_name}"


def token_counter(config: TeacherConfig, artifact_root: str, teacher: Teacher) -> TokenCounter:
    """Counts tokens with the configured tokenizer, the in-process teacher's, or approximately."""
    tokenizer = getattr(teacher, "tokenizer", None)
    if config.tokenizer:
        from labtune.generator.teacher_transformers import load_tokenizer

        tokenizer = load_tokenizer(resolve_artifact(config.tokenizer, artifact_root))
    if tokenizer is None:
        log.warning("no tokenizer configured (teacher.tokenizer): chunking at about 4 characters per token")
        return approximate_tokens
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


async def side_by_side(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Runs them side by side, so that the teacher always has work queued; the first failure (a
    teacher failure) stops them all and is raised as it is."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _stage_summary(result: LeafResult) -> dict[str, int]:
    return {c.stage: c.output for c in result.stages}


SampleT = TypeVar("SampleT", Record, ChoiceExample)


def _with_commit(sample: SampleT, commit: str) -> SampleT:
    if isinstance(sample, Record):
        metadata = sample.metadata.model_copy(update={"taxonomy_commit": commit})
        return sample.model_copy(update={"metadata": metadata})
    return sample


@dataclass(frozen=True)
class CacheSlot:
    """A leaf flow's place in the leaf cache."""

    cache: LeafCache
    key: str
    commit: str

    def get(self, model: type[SampleT]) -> tuple[LeafResult, list[SampleT]] | None:
        """The cached leaf as this run would write it: with this run's taxonomy commit, the one
        input of a sample that its key leaves out (an unchanged leaf keeps its key across commits)."""
        hit = self.cache.get(self.key, model)
        if hit is None:
            return None
        result, samples = hit
        return result, [_with_commit(sample, self.commit) for sample in samples]


async def run_flow(
    job: LeafJob,
    flow: Flow | AuxiliaryFlow,
    engine: Engine,
    checkpoint: LeafCheckpoint,
    build: Callable[[list[Row]], tuple[list[SampleT], StageCount | None]],
    model: type[SampleT],
    cached: CacheSlot | None = None,
) -> tuple[LeafResult, list[SampleT]]:
    """Runs (or resumes, or skips when finished, or takes from the leaf cache) one leaf's flow,
    then `build`s its output from the surviving rows (with the count of that last step, when it
    can drop rows); GenerationError when nothing survives."""
    done = checkpoint.result()
    if done is not None:
        log.info("leaf %s: finished earlier, %d samples", job.path, done.samples)
        return done, checkpoint.samples(model)
    hit = cached.get(model) if cached else None
    if hit is not None:
        log.info("leaf %s: reused from the leaf cache, %d samples", job.path, hit[0].samples)
        # Into the run's own folder as a generated leaf is: a resumed pod and the mix step of a
        # sharded run read it there, whatever the cache evicts meanwhile.
        checkpoint.finish(*hit)
        return hit
    counts, rows = checkpoint.resume() or ([], job.rows)
    if counts:
        log.info("leaf %s: resuming after stage %s", job.path, counts[-1].stage)
    for block in flow.blocks[len(counts) :]:
        rows, count = await engine.run(block, rows, salt=job.path)
        checkpoint.save_stage(count, rows)
        counts.append(count)
        log.info("leaf %s: %s %d -> %d", job.path, count.stage, count.input, count.output)
    samples, built = build(rows) if rows else ([], None)
    if built is not None:
        counts.append(built)
    if not samples:
        stages = ", ".join(
            f"{c.stage} {c.input}->{c.output}" + (f" ({c.malformed} malformed)" if c.malformed else "")
            for c in counts
        )
        raise GenerationError(f"leaf {job.path}: no sample survived the pipeline ({stages})")
    result = LeafResult(path=job.path, leaf_type=job.leaf_type, stages=counts, samples=len(samples))
    checkpoint.finish(result, samples)
    if cached:
        cached.cache.put(cached.key, result, samples)
    return result, samples


def training_samples(
    job: LeafJob, template: SampleTemplate, where: str, metadata: SampleMetadata, rows: list[Row]
) -> tuple[list[Record], None]:
    """A training flow's rows as records, through the flow's sample template (drops none)."""
    samples = []
    for index, row in enumerate(rows):
        messages = to_messages(template, row, where)
        # The chunk stays apart from the turns until mixing puts it in the user turn (mixing.py).
        document = render(template.context, row, f"{where} context") if template.context else ""
        samples.append(
            Record.model_validate(
                {
                    "id": record_id(
                        job.path, str(index), json.dumps(messages), *([document] if document else [])
                    ),
                    "messages": messages,
                    "metadata": metadata.model_copy(update={"document": document}),
                }
            )
        )
    return samples, None


async def run_leaf(
    job: LeafJob,
    flow_pipeline: Pipeline,
    engine: Engine,
    checkpoint: LeafCheckpoint,
    metadata: SampleMetadata,
    cached: CacheSlot | None = None,
) -> tuple[LeafResult, list[Record]]:
    """Runs (or resumes, or skips when finished, or reuses) one leaf's training flow;
    GenerationError when nothing survives."""
    flow = flow_pipeline.flow(job.leaf_type)
    assert flow.sample is not None  # flow() checked that the flow writes samples
    where = f"pipeline {flow_pipeline.name!r} {job.leaf_type} sample"
    build = partial(training_samples, job, flow.sample, where, metadata)
    return await run_flow(job, flow, engine, checkpoint, build, Record, cached)


def _generated(result: LeafResult, flow_pipeline: Pipeline) -> int:
    """Rows out of the leaf's first generation stage: the candidates before any filter."""
    blocks = flow_pipeline.flow(result.leaf_type).blocks
    first = next((i for i, b in enumerate(blocks) if isinstance(b, GenerateBlock)), 0)
    return result.stages[first].output if first < len(result.stages) else 0


@dataclass
class _Run:
    config: GenerateConfig
    pipeline: Pipeline
    teacher: Teacher
    metrics: GeneratorMetrics
    commit: str
    output: Path
    held_out: list[holdout.HeldOutLeaf]
    evaluation: list[EvalExample]
    choice_pipeline: Pipeline | None = None
    cache: LeafCache | None = None
    reuse: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per flow folder: leaves reused from the cache, leaves the teacher wrote."""
    choice_results: list[LeafResult] = field(default_factory=list)
    choice_failures: list[LeafFailure] = field(default_factory=list)
    questions: list[ChoiceExample] = field(default_factory=list)
    auxiliary_results: list[LeafResult] = field(default_factory=list)
    auxiliary_failures: list[LeafFailure] = field(default_factory=list)
    auxiliary: list[Record] = field(default_factory=list)

    def slot(self, folder: str, job: LeafJob) -> CacheSlot | None:
        if self.cache is None:
            return None
        return CacheSlot(self.cache, cache_key(folder, job.path, job.fingerprint), self.commit)

    def count_reuse(self, folder: str, slots: list[CacheSlot | None]) -> int:
        """Records how many of a flow's leaves came from the cache; returns that number."""
        hits = self.cache.hits if self.cache else set()
        reused = sum(1 for slot in slots if slot is not None and slot.key in hits)
        self.reuse[folder] = (reused, len(slots) - reused)
        if reused:
            self.metrics.leaves_reused.inc(reused)
        return reused

    def metadata(self, job: LeafJob, source: str) -> SampleMetadata:
        return SampleMetadata(
            source=source,
            leaf=job.path,
            leaf_type=job.leaf_type,
            pipeline=self.pipeline.name,
            teacher=self.teacher.model_name,
            taxonomy_commit=self.commit,
        )

    def _dataset(
        self, name: str, records: Sequence[BaseModel], upsampled: int | None = None
    ) -> DatasetOutput | None:
        if not records:
            return None
        digest = write_jsonl(self.output / f"{name}.jsonl", records)
        uri = f"{self.config.output.rstrip('/')}/{name}.jsonl"
        if not isinstance(records[0], Record):  # an evaluation dataset
            return DatasetOutput(uri=uri, samples=len(records), sha256=digest)
        sources = _sources([r for r in records if isinstance(r, Record)])
        return DatasetOutput(
            uri=uri,
            samples=len(records),
            sha256=digest,
            sources=dict(sorted(sources.items())),
            upsampled=upsampled,
        )

    async def leaves(self, jobs: list[LeafJob]) -> tuple[list[LeafResult], list[Record], list[LeafFailure]]:
        scale = self.config.scale
        engine = Engine(self.teacher, self.metrics, self.pipeline.system, scale.seed, scale.samples_per_seed)
        results: dict[str, tuple[LeafResult, list[Record]]] = {}
        failures: dict[str, str] = {}
        slots = [self.slot(TRAINING, job) for job in jobs]

        async def one(job: LeafJob, cached: CacheSlot | None) -> None:
            checkpoint = LeafCheckpoint(self.output / "checkpoints", job.path, job.fingerprint)
            metadata = self.metadata(job, GENERATED)
            try:
                results[job.path] = await run_leaf(job, self.pipeline, engine, checkpoint, metadata, cached)
            except GenerationError as error:
                failures[job.path] = str(error)
                log.warning("%s", error)
                return
            self.metrics.leaves_done.inc()
            self.metrics.samples_kept.inc(results[job.path][0].samples)
            self.metrics.samples_generated.inc(_generated(results[job.path][0], self.pipeline))

        await side_by_side(*(one(job, slot) for job, slot in zip(jobs, slots, strict=True)))
        self.count_reuse(TRAINING, slots)
        ordered = [results[j.path] for j in jobs if j.path in results]
        return (
            [r for r, _ in ordered],
            [s for _, samples in ordered for s in samples],
            [LeafFailure(path=j.path, reason=failures[j.path][:1024]) for j in jobs if j.path in failures],
        )

    async def side_flow(
        self,
        jobs: list[LeafJob],
        flow: Flow | AuxiliaryFlow,
        engine: Engine,
        folder: str,
        build: Callable[[LeafJob, list[Row]], tuple[list[SampleT], StageCount | None]],
        model: type[SampleT],
    ) -> tuple[list[LeafResult], list[SampleT], list[LeafFailure]]:
        """A flow beside the training leaves' (multiple-choice questions, auxiliary samples) over
        every job, checkpointed under `checkpoints/<folder>/`: a leaf of which nothing survives is
        listed as a failure (its training data is not at stake), not raised."""
        done: dict[str, tuple[LeafResult, list[SampleT]]] = {}
        failed: dict[str, str] = {}
        slots = [self.slot(folder, job) for job in jobs]

        async def one(job: LeafJob, cached: CacheSlot | None) -> None:
            checkpoint = LeafCheckpoint(self.output / "checkpoints" / folder, job.path, job.fingerprint)
            try:
                done[job.path] = await run_flow(
                    job, flow, engine, checkpoint, partial(build, job), model, cached
                )
            except GenerationError as error:
                failed[job.path] = str(error)
                log.warning("%s: %s", folder, error)

        await side_by_side(*(one(job, slot) for job, slot in zip(jobs, slots, strict=True)))
        self.count_reuse(folder, slots)
        return (
            [done[j.path][0] for j in jobs if j.path in done],
            [sample for j in jobs if j.path in done for sample in done[j.path][1]],
            [LeafFailure(path=p, reason=failed[p][:1024]) for p in sorted(failed)],
        )

    async def choices(self, jobs: list[LeafJob]) -> None:
        """The multiple-choice pipeline over every knowledge leaf; all of them failing is a
        GenerationError (raised by the caller)."""
        if self.choice_pipeline is None or not jobs:
            return
        flow = self.choice_pipeline.flow("knowledge", "choice")
        template = flow.choice
        assert template is not None  # flow() checked it
        questions = self.config.multiple_choice.questions_per_chunk if self.config.multiple_choice else 1
        system = self.choice_pipeline.system
        engine = Engine(self.teacher, self.metrics, system, self.config.scale.seed, questions)
        where = f"pipeline {self.choice_pipeline.name!r} knowledge choice"

        def build(job: LeafJob, rows: list[Row]) -> tuple[list[ChoiceExample], StageCount | None]:
            return to_choices(template, job.path, rows, where=where)

        self.choice_results, self.questions, self.choice_failures = await self.side_flow(
            jobs, flow, engine, CHOICES, build, ChoiceExample
        )

    async def auxiliaries(self, jobs: list[LeafJob]) -> None:
        """The pipeline's auxiliary flow over every knowledge leaf's chunks."""
        flow = self.pipeline.auxiliary
        if flow is None or not jobs:
            return
        scale = self.config.scale
        engine = Engine(self.teacher, self.metrics, self.pipeline.system, scale.seed, scale.samples_per_seed)
        where = f"pipeline {self.pipeline.name!r} auxiliary sample"

        def build(job: LeafJob, rows: list[Row]) -> tuple[list[Record], None]:
            metadata = self.metadata(job, AUXILIARY)
            return training_samples(job, flow.sample, where, metadata, rows)

        self.auxiliary_results, self.auxiliary, self.auxiliary_failures = await self.side_flow(
            jobs, flow, engine, AUXILIARY_FLOW, build, Record
        )

    def write_report(
        self, results: list[LeafResult], failures: list[LeafFailure], mixing: Mixed | None
    ) -> None:
        report = Report(
            taxonomy_commit=self.commit,
            teacher_model=self.teacher.model_name,
            pipeline=self.pipeline.name,
            leaves=results,
            failures=failures,
            held_out=self.held_out,
            choices=self.choice_results,
            choice_failures=self.choice_failures,
            auxiliary=self.auxiliary_results,
            auxiliary_failures=self.auxiliary_failures,
            mixing=(
                {
                    "knowledge": dict(_sources(mixing.phase1)),
                    "skills": dict(_sources(mixing.phase2)),
                    "upsampled": {"skills": mixing.upsampled},
                }
                if mixing
                else {}
            ),
            cache={
                folder: {"reused": reused, "generated": generated}
                for folder, (reused, generated) in self.reuse.items()
            },
        )
        (self.output / "report.json").write_text(report.model_dump_json(indent=1))

    def mix(self, samples: list[Record]) -> Mixed:
        knowledge = [s for s in samples if s.metadata.leaf_type == "knowledge"]
        skills = [s for s in samples if s.metadata.leaf_type != "knowledge"]
        mixing = self.config.mixing
        replays = [
            read_replay(resolve_artifact(r.uri, self.config.artifact_root), r.uri) for r in mixing.replay
        ]
        return mix(knowledge, skills, self.auxiliary, mixing, replays, self.config.scale.seed)

    def write_datasets(
        self, results: list[LeafResult], samples: list[Record], failures: list[LeafFailure], mixed: Mixed
    ) -> GenerateSummary:
        outputs = GenerationOutputs(
            knowledge=self._dataset("knowledge", mixed.phase1),
            skills=self._dataset("skills", mixed.phase2, mixed.upsampled),
            # Every selected leaf's, skipped ones too: the set depends on the taxonomy and the seed only.
            evaluation=self._dataset("evaluation", self.evaluation),
            evaluation_choices=self._dataset("evaluation-choices", self.questions),
        )
        stages: Counter[str] = Counter()
        for result in results:
            stages.update({f"{result.leaf_type}/{stage}": n for stage, n in _stage_summary(result).items()})
        for prefix, side in ((CHOICE_STAGES, self.choice_results), (AUXILIARY, self.auxiliary_results)):
            for result in side:
                stages.update({f"{prefix}/{stage}": n for stage, n in _stage_summary(result).items()})
        summary = GenerateSummary(
            taxonomy_commit=self.commit,
            teacher_model=self.teacher.model_name,
            pipeline=self.pipeline.name,
            outputs=outputs,
            leaves_done=len(results),
            leaves_total=len(results) + len(failures),
            samples_generated=sum(_generated(r, self.pipeline) for r in results),
            samples_kept=len(samples) + len(self.auxiliary),
            stages=dict(stages),
            leaves=[LeafSummary(path=r.path, stages=_stage_summary(r)) for r in results],
            report=f"{self.config.output.rstrip('/')}/report.json",
            failed_leaves=failures[:20],
            failed_leaf_count=len(failures),
            cost=self.cost(),
        )
        return fit(summary, ("leaves", "failed_leaves"))

    def cost(self) -> GenerationCost:
        reused, generated = self.reuse.get(TRAINING, (0, 0))
        return GenerationCost(
            leaves_reused=reused,
            leaves_generated=generated,
            prompt_tokens=self.metrics.prompt_tokens,
            completion_tokens=self.metrics.completion_tokens,
        )


def _sources(records: Sequence[Record]) -> Counter[str]:
    return Counter(r.metadata.source for r in records)


def load_pipeline(ref: PipelineRef, artifact_root: str) -> Pipeline:
    if ref.path:
        return pipeline.load(resolve_artifact(ref.path, artifact_root))
    return pipeline.load_builtin(ref.builtin or "simple")


def load_choice_pipeline(config: GenerateConfig) -> Pipeline | None:
    """The multiple-choice pipeline, checked to write questions for knowledge leaves; None when
    the run writes none."""
    if config.multiple_choice is None:
        return None
    choice_pipeline = load_pipeline(config.multiple_choice.pipeline, config.artifact_root)
    choice_pipeline.flow("knowledge", "choice")
    return choice_pipeline


@dataclass(frozen=True)
class _Leaf:
    """A selected leaf that passed validation, with its held-out seed examples taken out of
    `contents`, and its documents once they are read."""

    path: str
    leaf_type: LeafType
    contents: dict[str, Any]
    held_out: holdout.HoldOut
    documents: list[Document] = field(default_factory=list)


def _hold_out(
    config: GenerateConfig, leaves: list[tuple[str, LeafType, dict[str, Any]]]
) -> list[holdout.HoldOut]:
    """Each leaf split for evaluation; a ConfigError when a leaf would keep no seed example."""
    spec, splits, too_few = config.evaluation, [], []
    for path, leaf_type, contents in leaves:
        seeds = len(holdout.seed_examples(contents))
        count = holdout.held_out_count(spec, seeds)
        if count and count >= seeds:
            too_few.append(
                f"leaf {path} has {seeds} seed example(s): holding back {count} leaves none to generate "
                f"from (it needs at least {count + 1})"
            )
            continue
        indexes = holdout.choose(config.scale.seed, path, seeds, count)
        splits.append(holdout.hold_out(path, leaf_type, contents, indexes))
    if len(too_few) == 1:
        raise ConfigError(f"{holdout.setting(spec)}: {too_few[0]}")
    if too_few:
        raise ConfigError(
            f"{holdout.setting(spec)}: {len(too_few)} leaves have too few seed examples; first: {too_few[0]}"
        )
    return splits


def _select(config: GenerateConfig, root: Path, base: str, flow_pipeline: Pipeline) -> list[_Leaf]:
    """The leaves to generate for, in the taxonomy's order, without their documents; a ConfigError
    when one is invalid, the pipeline has no flow for it, or when there is none."""
    result = scan(root, base=base, include=config.include, exclude=config.exclude, validate="changed")
    selected = {f.path: f for f in result.report.files if f.path in set(result.changed)}
    errors = [(f.path, i) for f in selected.values() for i in f.errors]
    if errors:
        path, issue = errors[0]
        raise ConfigError(
            f"the taxonomy has {len(errors)} error(s) in the selected leaves; first: "
            f"{path}:{issue.line}: {issue.message}"
        )
    leaves = [(f.path, f.leaf_type, f.contents) for f in selected.values() if f.leaf_type and f.contents]
    if not leaves:
        raise ConfigError(f"no leaves to generate for (leaves={config.leaves}, base={base})")
    for _, leaf_type, _ in leaves:
        flow_pipeline.flow(leaf_type)  # a pipeline without a flow for the leaf fails now, not mid-run
    splits = _hold_out(config, leaves)  # before any document is fetched: it costs nothing to check
    return [
        _Leaf(path, leaf_type, split.contents, split)
        for (path, leaf_type, _), split in zip(leaves, splits, strict=True)
    ]


def _documents(config: GenerateConfig, leaf: _Leaf, cache: Path) -> list[Document]:
    """A knowledge leaf's documents, read (a ConfigError when they cannot be)."""
    if leaf.leaf_type != "knowledge":
        return []
    return fetch(DocumentSource.model_validate(leaf.contents["document"]), cache, config.taxonomy)


def _with_documents(config: GenerateConfig, leaves: list[_Leaf], cache: Path) -> list[_Leaf]:
    return [dataclasses.replace(leaf, documents=_documents(config, leaf, cache)) for leaf in leaves]


def _weights(config: GenerateConfig, leaves: list[_Leaf], cache: Path) -> dict[str, int]:
    """Each leaf's expected work: its seed rows (its chunks times its seeds for knowledge, its seeds
    for skills), chunked at about four characters per token so that every shard computes the same
    figures without a tokenizer; one leaf's documents are in memory at a time."""
    weights = {}
    for leaf in leaves:
        rows = rows_for(
            leaf.leaf_type, leaf.contents, _documents(config, leaf, cache), approximate_tokens,
            config.scale.chunk_tokens,
        )  # fmt: skip
        weights[leaf.path] = len(rows)
    return weights


def _shard_of(config: GenerateConfig, index: int, leaves: list[_Leaf], cache: Path) -> list[_Leaf]:
    """The leaves of shard `index`."""
    split = shards.assign(_weights(config, leaves, cache), config.shards)
    return [leaf for leaf in leaves if split[leaf.path] == index]


def _jobs(
    config: GenerateConfig, leaves: list[_Leaf], flow_pipeline: Pipeline, count: TokenCounter, teacher: str
) -> list[LeafJob]:
    jobs = []
    for leaf in leaves:
        # leaf.contents lacks the held-out seed examples: no row, so no prompt, carries them.
        rows = rows_for(leaf.leaf_type, leaf.contents, leaf.documents, count, config.scale.chunk_tokens)
        parts: list[object] = [
            flow_pipeline.fingerprint(),
            rows,
            config.scale.samples_per_seed,
            config.scale.seed,
            teacher,
        ]
        if leaf.held_out.seed_indexes:
            # A checkpoint made while these seeds were visible (or others held back) is not resumed;
            # with nothing held out the fingerprint is what it was before holding out existed.
            parts.append({"held_out": list(leaf.held_out.seed_indexes)})
        fingerprint = _fingerprint(*parts)
        jobs.append(LeafJob(leaf.path, leaf.leaf_type, rows, fingerprint))
    return jobs


def _document_jobs(
    leaves: list[_Leaf], rows: Callable[[_Leaf, KnowledgeQna], list[Row]], *fingerprint: object
) -> list[LeafJob]:
    """One job per knowledge leaf for a flow over its document chunks (multiple-choice questions,
    auxiliary samples); `fingerprint` is what else decides the flow's result."""
    jobs = []
    for leaf in leaves:
        if leaf.leaf_type != "knowledge":
            continue
        leaf_rows = rows(leaf, KnowledgeQna.model_validate(leaf.contents))
        jobs.append(LeafJob(leaf.path, leaf.leaf_type, leaf_rows, _fingerprint(*fingerprint, leaf_rows)))
    return jobs


def _choice_jobs(
    config: GenerateConfig, leaves: list[_Leaf], choice_pipeline: Pipeline, count: TokenCounter, teacher: str
) -> list[LeafJob]:
    """The multiple-choice pipeline's jobs: each knowledge leaf's chunks."""
    assert config.multiple_choice is not None  # load_choice_pipeline returned a pipeline
    questions, chunk_tokens = config.multiple_choice.questions_per_chunk, config.scale.chunk_tokens
    return _document_jobs(
        leaves,
        lambda leaf, qna: chunk_rows(qna, leaf.documents, count, chunk_tokens, questions),
        choice_pipeline.fingerprint(),
        config.scale.seed,
        teacher,
    )


def _auxiliary_jobs(
    config: GenerateConfig, leaves: list[_Leaf], flow_pipeline: Pipeline, count: TokenCounter, teacher: str
) -> list[LeafJob]:
    """The auxiliary flow's jobs: each knowledge leaf's chunks, one row per kind of rewrite."""
    flow = flow_pipeline.auxiliary
    if flow is None:
        return []
    scale = config.scale

    def rows(leaf: _Leaf, qna: KnowledgeQna) -> list[Row]:
        rng = random.Random(f"{scale.seed}/{leaf.path}/auxiliary")
        return auxiliary_rows(qna, leaf.documents, count, scale.chunk_tokens, flow.instructions, rng)

    return _document_jobs(leaves, rows, flow.model_dump_json(), flow_pipeline.system, scale.seed, teacher)


@dataclass(frozen=True)
class _Setup:
    """What a run checks before it makes a teacher (it may load a model) or touches its output
    folder: a bad config fails in seconds and leaves no trace."""

    flow_pipeline: Pipeline
    choice_pipeline: Pipeline | None
    output: Path
    cache: LeafCache | None


def _setup(config: GenerateConfig) -> _Setup:
    flow_pipeline = load_pipeline(config.pipeline, config.artifact_root)
    choice_pipeline = load_choice_pipeline(config)
    output = output_path(config.output, config.artifact_root, "output")
    cache = (
        LeafCache(
            output_path(config.cache.uri, config.artifact_root, "cache"),
            config.cache.max_bytes,
            read=config.cache.reuse,
        )
        if config.cache
        else None
    )
    for replay in config.mixing.replay:  # read again for mixing, hours later: a bad line fails now
        read_replay(resolve_artifact(replay.uri, config.artifact_root), replay.uri)
    return _Setup(flow_pipeline, choice_pipeline, output, cache)


def _checkout(
    config: GenerateConfig, setup: _Setup, pick: Callable[[list[_Leaf], Path], list[_Leaf]] | None
) -> tuple[str, list[_Leaf], list[_Leaf]]:
    """The pinned commit, every selected leaf, and those `pick`ed (None: none) with their documents."""
    base = config.base if config.leaves == "changed" else EMPTY_BASE
    with tempfile.TemporaryDirectory(prefix="labtune-generate-") as workdir:
        root = Path(workdir) / "taxonomy"
        commit = gitrepo.clone(config.taxonomy, root, base=base)
        leaves = _select(config, root, base, setup.flow_pipeline)
        documents = Path(workdir) / "documents"
        picked = _with_documents(config, pick(leaves, documents), documents) if pick else []
    return commit, leaves, picked


@dataclass
class _Flows:
    """The flows of a run over its leaves, finished."""

    run: _Run
    results: list[LeafResult]
    samples: list[Record]
    failures: list[LeafFailure]
    choice_leaves: int
    """Knowledge leaves the multiple-choice flow ran over."""


async def _run_flows(
    config: GenerateConfig,
    setup: _Setup,
    commit: str,
    leaves: list[_Leaf],
    teacher: Teacher | None,
    metrics: GeneratorMetrics,
) -> tuple[_Flows, dict[str, list[LeafJob]]]:
    """Every flow over `leaves` (with their documents), side by side on one teacher, and the flows'
    jobs by checkpoint folder (training, choices, auxiliary)."""
    owned = teacher is None
    teacher = teacher or make_teacher(config.teacher, config.artifact_root, metrics)
    try:
        count = token_counter(config.teacher, config.artifact_root, teacher)
        who = teacher_identity(config.teacher, teacher)
        choice_pipeline = setup.choice_pipeline
        jobs = {
            TRAINING: _jobs(config, leaves, setup.flow_pipeline, count, who),
            CHOICES: _choice_jobs(config, leaves, choice_pipeline, count, who) if choice_pipeline else [],
            AUXILIARY_FLOW: _auxiliary_jobs(config, leaves, setup.flow_pipeline, count, who),
        }
        setup.output.mkdir(parents=True, exist_ok=True)
        metrics.leaves_total.set(len(jobs[TRAINING]))
        run = _Run(
            config,
            setup.flow_pipeline,
            teacher,
            metrics,
            commit,
            setup.output,
            held_out=[],
            evaluation=[],
            choice_pipeline=choice_pipeline,
            cache=setup.cache,
        )
        trained: list[tuple[list[LeafResult], list[Record], list[LeafFailure]]] = []

        async def training() -> None:
            trained.append(await run.leaves(jobs[TRAINING]))

        await side_by_side(training(), run.choices(jobs[CHOICES]), run.auxiliaries(jobs[AUXILIARY_FLOW]))
    finally:
        if owned:
            await teacher.aclose()
    return _Flows(run, *trained[0], choice_leaves=len(jobs[CHOICES])), jobs


def _finish(config: GenerateConfig, setup: _Setup, flows: _Flows, leaves: list[_Leaf]) -> GenerateSummary:
    """The report, the leaf cache's bound and the datasets of finished flows over every leaf;
    GenerationError when they make no datasets."""
    run = flows.run
    run.held_out = [leaf.held_out.report(leaf.path) for leaf in leaves if leaf.held_out.seed_indexes]
    # Every selected leaf's, skipped ones too: the set depends on the taxonomy and the seed only.
    run.evaluation = [example for leaf in leaves for example in leaf.held_out.examples]
    problem = _run_problem(config, len(leaves), flows.results, flows.failures, flows.choice_leaves, run)
    mixed = None if problem else run.mix(flows.samples)
    run.write_report(flows.results, flows.failures, mixed)
    if setup.cache:
        setup.cache.prune()
    if problem:
        raise problem
    assert mixed is not None
    return run.write_datasets(flows.results, flows.samples, flows.failures, mixed)


async def generate_async(
    config: GenerateConfig, *, teacher: Teacher | None = None, metrics: GeneratorMetrics | None = None
) -> GenerateSummary:
    """Runs the generation; a teacher may be handed in (tests, benchmarks), else it is made from
    the config. Raises ConfigError, TeacherError, GitError or GenerationError."""
    if config.shards > 1:
        raise ConfigError(
            f"this run is split in {config.shards} shards: run `labtune generate --shard INDEX` for each "
            "index from 0 (in an Indexed Job, JOB_COMPLETION_INDEX), then `labtune generate --mix`"
        )
    setup = _setup(config)
    commit, leaves, with_documents = _checkout(config, setup, lambda all_leaves, _: all_leaves)
    flows, _ = await _run_flows(config, setup, commit, with_documents, teacher, metrics or GeneratorMetrics())
    return _finish(config, setup, flows, leaves)


async def generate_shard_async(
    config: GenerateConfig,
    index: int,
    *,
    teacher: Teacher | None = None,
    metrics: GeneratorMetrics | None = None,
) -> ShardSummary:
    """Runs shard `index` of a sharded run: its leaves' flows into the run's checkpoints, and its
    outcome for the mix step. A leaf that yields nothing fails the shard under FailRun, as it fails
    a one-pod run."""
    if not 0 <= index < config.shards:
        raise ConfigError(
            f"shard index {index} is not one of the run's {config.shards} (0 to {config.shards - 1})"
        )
    metrics = metrics or GeneratorMetrics()
    setup = _setup(config)
    commit, _, mine = _checkout(config, setup, partial(_shard_of, config, index))
    flows, jobs = await _run_flows(config, setup, commit, mine, teacher, metrics)
    if config.leaf_failure_policy == "FailRun" and (
        problem := _leaf_problem(config, len(mine), flows.results, flows.failures)
    ):
        raise problem
    run = flows.run
    outcome = shards.ShardOutcome(
        index=index,
        count=config.shards,
        config_digest=shards.config_digest(config),
        teacher_model=run.teacher.model_name,
        leaves=[leaf.path for leaf in mine],
        flows={
            folder: shards.FlowOutcome(
                done={r.path: fingerprints[r.path] for r in results},
                failures=failures,
                reused=run.reuse.get(folder, (0, 0))[0],
            )
            for folder, results, failures, fingerprints in (
                (TRAINING, flows.results, flows.failures, _fingerprints(jobs[TRAINING])),
                (CHOICES, run.choice_results, run.choice_failures, _fingerprints(jobs[CHOICES])),
                (
                    AUXILIARY_FLOW,
                    run.auxiliary_results,
                    run.auxiliary_failures,
                    _fingerprints(jobs[AUXILIARY_FLOW]),
                ),
            )
        },
        prompt_tokens=metrics.prompt_tokens,
        completion_tokens=metrics.completion_tokens,
    )
    shards.write_outcome(setup.output, outcome)
    return ShardSummary(
        index=index,
        shards=config.shards,
        leaves_done=len(flows.results),
        leaves_total=len(mine),
        samples_generated=sum(_generated(r, setup.flow_pipeline) for r in flows.results),
        samples_kept=len(flows.samples) + len(run.auxiliary),
        failed_leaf_count=len(flows.failures),
        outcome=f"{config.output.rstrip('/')}/{shards.outcome_path(Path(), index).as_posix()}",
    )


def plan_shards(config: GenerateConfig) -> shards.ShardPlan:
    """How the run's leaves split across its shards, with each one's expected work (what every
    shard computes for itself), without a teacher. Raises ConfigError or GitError."""
    setup = _setup(config)
    weights: dict[str, int] = {}

    def weigh(leaves: list[_Leaf], cache: Path) -> list[_Leaf]:
        weights.update(_weights(config, leaves, cache))
        return []  # no leaf's documents are kept

    _checkout(config, setup, weigh)
    return shards.plan(weights, config.shards)


def _fingerprints(jobs: list[LeafJob]) -> dict[str, str]:
    return {job.path: job.fingerprint for job in jobs}


@dataclass(frozen=True)
class _ShardsTeacher:
    """The mix step's teacher: it names the model the shards asked, and is asked nothing."""

    model_name: str

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        raise AssertionError("the mix step asks the teacher nothing: every leaf is checkpointed")

    async def aclose(self) -> None:
        return None


def _merged(outcomes: list[shards.ShardOutcome], folder: str) -> shards.FlowOutcome:
    merged = shards.FlowOutcome()
    for outcome in outcomes:
        flow = outcome.flows.get(folder, shards.FlowOutcome())
        merged.done.update(flow.done)
        merged.failures.extend(flow.failures)
        merged.reused += flow.reused
    return merged


def _read_flow(
    root: Path, leaves: list[_Leaf], flow: shards.FlowOutcome, model: type[SampleT]
) -> tuple[list[LeafResult], list[SampleT]]:
    """A flow's finished leaves from their checkpoints, in the taxonomy's order, as the flow
    itself returns them."""
    results, samples = [], []
    for leaf in leaves:
        if leaf.path not in flow.done:
            continue
        checkpoint = LeafCheckpoint(root, leaf.path, flow.done[leaf.path])
        result = checkpoint.result()
        if result is None:
            raise GenerationError(
                f"leaf {leaf.path}: its shard finished it, but {checkpoint.folder} has no result"
            )
        results.append(result)
        samples.extend(checkpoint.samples(model))
    return results, samples


def mix_shards(config: GenerateConfig) -> GenerateSummary:
    """The mix step of a sharded run: every leaf from the checkpoint its shard made, mixed and
    written through the one-pod run's own code. Raises ConfigError, GitError or GenerationError
    (a shard has not finished)."""
    setup = _setup(config)
    try:
        outcomes = shards.read_outcomes(setup.output, config)
    except shards.ShardsNotFinished as error:
        raise GenerationError(str(error)) from None
    commit, leaves, _ = _checkout(config, setup, None)
    metrics = GeneratorMetrics()
    metrics.prompt_tokens = sum(o.prompt_tokens for o in outcomes)
    metrics.completion_tokens = sum(o.completion_tokens for o in outcomes)
    run = _Run(
        config,
        setup.flow_pipeline,
        _ShardsTeacher(outcomes[0].teacher_model),
        metrics,
        commit,
        setup.output,
        held_out=[],
        evaluation=[],
        choice_pipeline=setup.choice_pipeline,
        cache=setup.cache,
    )
    checkpoints = setup.output / "checkpoints"
    flows = {folder: _merged(outcomes, folder) for folder in (TRAINING, CHOICES, AUXILIARY_FLOW)}
    for folder, flow in flows.items():
        if jobs := len(flow.done) + len(flow.failures):
            run.reuse[folder] = (flow.reused, jobs - flow.reused)
    order = {leaf.path: position for position, leaf in enumerate(leaves)}
    results, samples = _read_flow(checkpoints, leaves, flows[TRAINING], Record)
    failures = sorted(flows[TRAINING].failures, key=lambda f: order[f.path])
    run.choice_results, run.questions = _read_flow(
        checkpoints / CHOICES, leaves, flows[CHOICES], ChoiceExample
    )
    run.choice_failures = sorted(flows[CHOICES].failures, key=lambda f: f.path)
    run.auxiliary_results, run.auxiliary = _read_flow(
        checkpoints / AUXILIARY_FLOW, leaves, flows[AUXILIARY_FLOW], Record
    )
    run.auxiliary_failures = sorted(flows[AUXILIARY_FLOW].failures, key=lambda f: f.path)
    choice_leaves = len(flows[CHOICES].done) + len(flows[CHOICES].failures)
    return _finish(config, setup, _Flows(run, results, samples, failures, choice_leaves), leaves)


def _leaf_problem(
    config: GenerateConfig, leaves: int, results: list[LeafResult], failures: list[LeafFailure]
) -> GenerationError | None:
    """Why the training leaves' failures fail the run (FailRun, or no leaf left), if they do."""
    if failures and (config.leaf_failure_policy == "FailRun" or not results):
        # The finished leaves stay checkpointed: a run with the same output resumes them.
        skip = " (or set leafFailurePolicy: SkipLeaf to finish without it)" if results else ""
        return GenerationError(
            f"{len(failures)} of {leaves} leaves produced nothing{skip}: "
            + "; ".join(f.reason for f in failures)
        )
    return None


def _run_problem(
    config: GenerateConfig,
    leaves: int,
    results: list[LeafResult],
    failures: list[LeafFailure],
    choice_leaves: int,
    run: _Run,
) -> GenerationError | None:
    """Why the finished flows make no datasets, if they do not."""
    if problem := _leaf_problem(config, leaves, results, failures):
        return problem
    if choice_leaves and not run.questions:
        return GenerationError(
            f"evaluation.multipleChoice: no question survived the pipeline in any of the {choice_leaves} "
            "knowledge leaves (see report.json); first: " + run.choice_failures[0].reason
        )
    return None


def generate(
    config: GenerateConfig, *, teacher: Teacher | None = None, metrics: GeneratorMetrics | None = None
) -> GenerateSummary:
    """generate_async, run to completion."""
    return asyncio.run(generate_async(config, teacher=teacher, metrics=metrics))


def generate_shard(
    config: GenerateConfig,
    index: int,
    *,
    teacher: Teacher | None = None,
    metrics: GeneratorMetrics | None = None,
) -> ShardSummary:
    """generate_shard_async, run to completion."""
    return asyncio.run(generate_shard_async(config, index, teacher=teacher, metrics=metrics))
