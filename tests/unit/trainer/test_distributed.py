"""Batch arithmetic across processes and the torchrun launch (the run itself is an integration test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labtune.contract import ConfigError
from labtune.contract.train import Distributed, TrainConfig
from labtune.trainer.launcher import needs_launch, torchrun_args
from labtune.trainer.phases import BatchShape, batch_shape, estimated_steps


@pytest.mark.parametrize(
    ("effective", "most", "world", "shape"),
    [
        (32, 8, 1, BatchShape(8, 4)),
        (32, 8, 2, BatchShape(8, 2)),
        (32, 64, 2, BatchShape(16, 1)),
        (30, 8, 4, BatchShape(8, 1)),  # 32 samples a step: the nearest split above 30
        (10, 4, 1, BatchShape(4, 3)),
        (1, 8, 2, BatchShape(1, 1)),
    ],
)
def test_the_effective_batch_is_split_into_micro_batches(
    effective: int, most: int, world: int, shape: BatchShape
) -> None:
    assert batch_shape(effective, most, world) == shape


def test_estimated_steps_count_partial_accumulations() -> None:
    assert estimated_steps(18, epochs=2, shape=BatchShape(4, 2), world_size=1) == 6  # 5 batches -> 3 steps
    assert (
        estimated_steps(18, epochs=1, shape=BatchShape(4, 2), world_size=2) == 2
    )  # 9 a process -> 3 batches


def _config(nodes: int, procs: int) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "baseModel": {"uri": "m"},
            "datasets": {"knowledge": "k"},
            "phases": [{"name": "k", "dataset": "knowledge"}],
            "output": "o",
            "distributed": Distributed(nodes=nodes, procs_per_node=procs),
        }
    )


def test_one_node_runs_torchrun_standalone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    config = _config(1, 2)
    assert needs_launch(config)
    args = torchrun_args(config, Path("c.yaml"))
    assert args[1:] == [
        "-m", "torch.distributed.run", "--nproc-per-node=2", "--max-restarts=0", "--standalone",
        "-m", "labtune.trainer", "--config", "c.yaml",
    ]  # fmt: skip
    assert not needs_launch(_config(1, 1))
    monkeypatch.setenv("LOCAL_RANK", "0")  # already a torchrun worker
    assert not needs_launch(config)


def test_several_nodes_rendezvous_at_the_operators_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "job-0.job")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    args = torchrun_args(_config(2, 4), Path("c.yaml"))
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=job-0.job", "--master-port=29500"} <= set(args)
    assert "--standalone" not in args
    monkeypatch.delenv("MASTER_ADDR")
    with pytest.raises(ConfigError, match="set MASTER_ADDR"):
        torchrun_args(_config(2, 4), Path("c.yaml"))
