"""`python -m labtune.trainer --config FILE`: what the torchrun launcher starts in each worker."""

from __future__ import annotations

from labtune.trainer.trainer_cli import train

train()
