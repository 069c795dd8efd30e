"""A SyntheticDataRun split across the pods of an Indexed Job (`parallelism`): which leaves each
shard generates, what a finished shard leaves on the artifact volume for the mix step, and reading
that back.

Every shard scans the same taxonomy at the same commit and splits it the same way, so no shard
needs to hear from another. A shard runs its leaves' flows into the run's own per-leaf checkpoints
(the same folders a one-pod run writes) and then writes its outcome; the mix step reads every
outcome and every leaf from its checkpoint, and mixes and writes the datasets as a one-pod run
does, through the same code: the datasets are the same bytes."""

from __future__ import annotations

import hashlib
import heapq
import os
from pathlib import Path

from pydantic import BaseModel

from labtune.api.synthetic_data_run_types import LeafFailure
from labtune.contract.generate import GenerateConfig

SHARDS_FOLDER = "shards"


class FlowOutcome(BaseModel):
    """One flow's leaves in a shard: the fingerprint of each finished leaf's checkpoint, and the
    leaves of which nothing survived."""

    done: dict[str, str] = {}
    """Leaf path -> the fingerprint its checkpoint was made with."""
    failures: list[LeafFailure] = []
    reused: int = 0
    """Leaves taken from the leaf cache rather than the teacher."""


class ShardOutcome(BaseModel):
    """What a finished shard wrote, as `shards/shard-<index>.json` in the output folder."""

    index: int
    count: int
    config_digest: str
    """The run's config without the shard's own settings: a mix step refuses an outcome of another run."""
    teacher_model: str
    leaves: list[str]
    flows: dict[str, FlowOutcome]
    """By the flow's checkpoint folder: training, choices, auxiliary."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def config_digest(config: GenerateConfig) -> str:
    # The metrics port and termination log differ per pod without changing what is generated.
    shared = config.model_dump_json(exclude={"metrics_port", "termination_log"})
    return hashlib.sha256(shared.encode()).hexdigest()


def assign(weights: dict[str, int], count: int) -> dict[str, int]:
    """Leaf path -> shard index, balanced by expected work: the heaviest leaf first goes to the
    shard with the least work so far (longest processing time first; ties by path and by index,
    so every shard computes the same split)."""
    loads = [(0, index) for index in range(count)]
    shards: dict[str, int] = {}
    for path, weight in sorted(weights.items(), key=lambda item: (-item[1], item[0])):
        load, index = heapq.heappop(loads)
        shards[path] = index
        heapq.heappush(loads, (load + max(weight, 1), index))
    return shards


class PlannedShard(BaseModel):
    index: int
    work: int
    """Expected work: the seed rows of its leaves."""
    leaves: list[str]


class ShardPlan(BaseModel):
    """What `labtune generate --plan` prints: the split every shard will make."""

    leaves: int
    work: int
    shards: list[PlannedShard]


def plan(weights: dict[str, int], count: int) -> ShardPlan:
    split = assign(weights, count)
    planned = [PlannedShard(index=index, work=0, leaves=[]) for index in range(count)]
    for path in sorted(weights):
        planned[split[path]].leaves.append(path)
        planned[split[path]].work += weights[path]
    return ShardPlan(leaves=len(weights), work=sum(weights.values()), shards=planned)


def outcome_path(output: Path, index: int) -> Path:
    return output / SHARDS_FOLDER / f"shard-{index:03d}.json"


def write_outcome(output: Path, outcome: ShardOutcome) -> None:
    path = outcome_path(output, outcome.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(outcome.model_dump_json())
    os.replace(temporary, path)  # a mix step never reads half an outcome


class ShardsNotFinished(Exception):
    """The mix step found a shard that has not finished (or one of another run)."""


def read_outcomes(output: Path, config: GenerateConfig) -> list[ShardOutcome]:
    """Every shard's outcome, checked to belong to this run; ShardsNotFinished naming the first
    shard that is missing or foreign."""
    digest, outcomes = config_digest(config), []
    for index in range(config.shards):
        path = outcome_path(output, index)
        if not path.is_file():
            raise ShardsNotFinished(
                f"shard {index} of {config.shards} has not finished: {path} does not exist"
            )
        outcome = ShardOutcome.model_validate_json(path.read_text())
        if outcome.config_digest != digest or outcome.count != config.shards:
            raise ShardsNotFinished(
                f"{path} was written by a run with another config; run shard {index} again"
            )
        outcomes.append(outcome)
    return outcomes
