"""`python -m labtune.trainer --config FILE`: what the torchrun launcher starts in each worker."""

from __future__ import annotations

from labtune.trainer.cli import train

train()
