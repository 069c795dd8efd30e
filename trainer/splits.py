"""A phase's training and held-out samples: split, tokenized, over-long ones dropped."""

from __future__ import annotations

import random
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from labtune.contract import ConfigError
from labtune.contract.records import Record
from labtune.trainer.masking import TokenizedSample, tokenize_sample


@dataclass(frozen=True)
class Split:
    train: list[Record]
    held_out: list[Record]


@dataclass(frozen=True)
class PhaseData:
    train: list[TokenizedSample]
    held_out: list[TokenizedSample]
    dropped: int
    """Samples longer than the phase's max sequence length."""


def split_samples(samples: list[Record], fraction: float, seed: int) -> Split:
    """A seeded random held-out split; at least one sample each side when the fraction is not 0.
    It depends only on the dataset and the seed, so every phase (and restart) holds out the same."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    count = round(fraction * len(samples))
    if fraction > 0 and len(samples) >= 2:
        count = min(max(count, 1), len(samples) - 1)
    held = set(order[:count])
    return Split(
        train=[s for i, s in enumerate(samples) if i not in held],
        held_out=[s for i, s in enumerate(samples) if i in held],
    )


def prepare_phase_data(
    split: Split, tokenizer: PreTrainedTokenizerBase, max_seq_len: int, name: str
) -> PhaseData:
    """Tokenizes both sides and drops samples longer than max_seq_len tokens."""
    train = [tokenize_sample(s, tokenizer) for s in split.train]
    held_out = [tokenize_sample(s, tokenizer) for s in split.held_out]
    kept_train = [t for t in train if len(t.input_ids) <= max_seq_len]
    kept_held_out = [t for t in held_out if len(t.input_ids) <= max_seq_len]
    if not kept_train:
        raise ConfigError(f"phase {name}: every training sample is longer than maxSeqLen {max_seq_len}")
    dropped = len(train) + len(held_out) - len(kept_train) - len(kept_held_out)
    return PhaseData(train=kept_train, held_out=kept_held_out, dropped=dropped)
