"""Padding-free packing: samples share one row without padding and without seeing each other, and
the loss covers exactly the trained tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DataCollatorWithFlattening, LlamaForCausalLM, PreTrainedTokenizerFast

from labtune.contract.records import Record
from labtune.trainer.loss import trained_positions, trained_token_loss_sum
from labtune.trainer.masking import IGNORE_INDEX, TokenizedSample, tokenize_sample


@pytest.fixture(scope="module")
def samples(tiny_tokenizer: PreTrainedTokenizerFast) -> list[TokenizedSample]:
    conversations = [
        [("user", "what is the capital of france?"), ("assistant", "paris is the capital.")],
        [("user", "one two"), ("assistant", "three")],
        [
            ("system", "be brief"),
            ("user", "tell me about tonsils."),
            ("assistant", "tonsils are in the throat."),
        ],
    ]
    return [
        tokenize_sample(Record(messages=[{"role": r, "content": c} for r, c in turns]), tiny_tokenizer)  # type: ignore[misc]
        for turns in conversations
    ]


def _packed(samples: list[TokenizedSample]) -> dict[str, torch.Tensor]:
    batch: dict[str, torch.Tensor] = DataCollatorWithFlattening()(
        [{"input_ids": s.input_ids, "labels": s.labels} for s in samples]
    )
    return batch


def test_samples_are_concatenated_without_padding(samples: list[TokenizedSample]) -> None:
    batch = _packed(samples)
    assert batch["input_ids"].shape == (1, sum(len(s.input_ids) for s in samples))
    assert "attention_mask" not in batch
    assert batch["input_ids"][0].tolist() == [t for s in samples for t in s.input_ids]
    starts = [0]
    for s in samples[:-1]:
        starts.append(starts[-1] + len(s.input_ids))
    positions = batch["position_ids"][0].tolist()
    assert [i for i, p in enumerate(positions) if p == 0] == starts
    # No sample is trained on predicting the next sample's first token.
    labels = batch["labels"][0].tolist()
    assert all(labels[i] == IGNORE_INDEX for i in starts)
    assert labels == [label for s in samples for label in [IGNORE_INDEX, *s.labels[1:]]]


def test_packed_samples_do_not_attend_to_each_other(tiny_model: Path, samples: list[TokenizedSample]) -> None:
    """The loss of the packed row is the sum of the samples' losses computed one by one."""
    model = LlamaForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    with torch.no_grad():
        packed, _ = trained_token_loss_sum(model, _packed(samples))
        alone = sum(trained_token_loss_sum(model, _packed([s]))[0] for s in samples)
    torch.testing.assert_close(packed, alone)


def test_a_kv_cache_would_let_packed_samples_attend_to_each_other(
    tiny_model: Path, samples: list[TokenizedSample]
) -> None:
    """Why the loss passes use_cache=False: transformers builds the per-sample mask from
    position_ids only when no cache is in use."""
    model = LlamaForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    batch = _packed(samples)
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([s.input_ids])).logits[0] for s in samples])
        for use_cache, isolated in ((False, True), (True, False)):
            logits = model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=use_cache
            )
            assert torch.allclose(logits.logits[0], alone, atol=1e-5) == isolated


def test_the_loss_covers_exactly_the_trained_tokens(tiny_model: Path, samples: list[TokenizedSample]) -> None:
    model = LlamaForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    batch = _packed(samples)
    with torch.no_grad():
        total, outputs = trained_token_loss_sum(model, dict(batch))
        reference = model(**batch, use_cache=False)  # the model's own loss: the mean over the same tokens
    trained = int((batch["labels"][0, 1:] != IGNORE_INDEX).sum())
    assert outputs.logits.shape == (trained, model.config.vocab_size)  # logits only where trained
    torch.testing.assert_close(total / trained, reference.loss)


def test_trained_positions_are_shifted_by_one() -> None:
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6, IGNORE_INDEX, 7]])
    assert trained_positions(labels).tolist() == [[False, True, True, False, True, False]]
