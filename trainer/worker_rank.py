"""This process's place among the trainer processes (torchrun's environment; one process without)."""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def barrier() -> None:
    """Waits for every process (a no-op before the Trainer has set up the process group)."""
    import torch.distributed as dist  # here: the launcher imports this module without torch

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
