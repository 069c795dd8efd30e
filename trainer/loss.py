"""The causal-LM loss over trained tokens, projecting onto the vocabulary only where a token is
trained.

The output head (hidden size x vocabulary) and its softmax are a large share of a small model's
compute (about 40% of SmolLM2-135M's forward pass on CPU); positions whose next token is masked
need no logits at all. transformers' `logits_to_keep` takes the boolean mask of those positions.
The value is the same token-level cross-entropy the model's own loss computes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional
from transformers import Trainer

from labtune.trainer.masking import IGNORE_INDEX


def trained_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is trained (the causal shift), as a boolean mask like labels."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def _trained_logits(model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The logits predicting each trained token (in order, fp32), those tokens, and the outputs."""
    labels = inputs["labels"]
    keep = trained_positions(labels)
    features = {key: value for key, value in inputs.items() if key != "labels"}
    # Without use_cache=False the model builds a KV cache, and transformers then ignores the
    # position_ids that separate packed samples: they would attend to each other.
    outputs = model(**features, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
    targets = labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]
    return logits, targets, outputs


def trained_token_loss_sum(model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
    """Sum of the cross-entropy over trained tokens, and the model's outputs."""
    logits, targets, outputs = _trained_logits(model, inputs)
    return functional.cross_entropy(logits, targets, reduction="sum"), outputs


def trained_token_losses(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """The cross-entropy (negative log-likelihood) of each trained token, in order: of packed
    samples, the first sample's tokens, then the next one's."""
    logits, targets, _ = _trained_logits(model, inputs)
    return functional.cross_entropy(logits, targets, reduction="none")


class TrainedTokensTrainer(Trainer):
    """A Trainer whose loss computes logits only at trained positions, normalized exactly as
    Trainer normalizes the model's loss (over the tokens of the whole accumulated batch)."""

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        total, outputs = trained_token_loss_sum(model, inputs)
        if num_items_in_batch is None:
            loss = total / max(int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum()), 1)
        else:
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices:
                # num_items_in_batch counts every process's tokens; DDP averages the gradients.
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
