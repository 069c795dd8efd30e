"""Scorers of `labtune evaluate`: the likelihood of a reference answer under a model, the model's
own (greedy) answer, and the comparison of an answer with the reference: exact match, contains,
ROUGE-L.

The likelihood is computed on the sample exactly as training tokenizes it (masking.py): the
reference answer's tokens are the ones training would learn, its content and the end-of-turn text
up to EOS, each predicted from everything before it. Several examples are packed into one row
without padding, as in training, with logits only at those positions (loss.py).

Answers are compared as words: Unicode-normalized (NFKC), case-folded, letters and digits only,
so case, punctuation and spacing do not count; ROUGE-L is the F-measure of their longest common
subsequence."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from rapidfuzz.distance import LCSseq
from transformers import (
    DataCollatorWithFlattening,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from labtune.contract import ConfigError
from labtune.trainer.loss import trained_token_losses
from labtune.trainer.masking import IGNORE_INDEX, TokenizedSample

Model = PreTrainedModel | PeftModel
Progress = Callable[[int], None]
"""Called after each batch with the number of examples it scored."""

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The words of a text as answers are compared: letters and digits, case-folded."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def exact_match(answer: str, reference: str) -> bool:
    """The same words in the same order (a reference without words: the same stripped text)."""
    expected = words(reference)
    if not expected:
        return answer.strip() == reference.strip()
    return words(answer) == expected


def contains(answer: str, reference: str) -> bool:
    """The reference's words appear in the answer in order and next to each other."""
    expected = words(reference)
    if not expected:
        return reference.strip() in answer
    found = words(answer)
    size = len(expected)
    return any(found[start : start + size] == expected for start in range(len(found) - size + 1))


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure (Lin 2004, as rouge-score computes it with beta 1): the longest common
    subsequence of words, found by rapidfuzz, over both lengths; 0 when either has no words.
    Not rouge-score itself: it imports nltk, 2.1 s of a 6 s evaluation of the demo (and its own
    tokenizer drops every non-ASCII word)."""
    found, expected = words(answer), words(reference)
    common = LCSseq.similarity(found, expected)
    if not common:
        return 0.0
    precision, recall = common / len(found), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class AnswerLikelihood:
    nll: float
    """Mean negative log-likelihood (nats) per answer token."""
    tokens: int
    """Answer tokens (labelled in the sample)."""


def _answer_tokens(sample: TokenizedSample) -> int:
    # The first label of each packed sample is the separator (DataCollatorWithFlattening); it is
    # never an answer token, the prompt's header comes first.
    return sum(label != IGNORE_INDEX for label in sample.labels[1:])


def answer_likelihoods(
    model: Model, samples: Sequence[TokenizedSample], batch_size: int, progress: Progress | None = None
) -> list[AnswerLikelihood]:
    """Each sample's answer likelihood, batch_size samples packed per forward pass."""
    device = next(model.parameters()).device
    collate = DataCollatorWithFlattening()  # type: ignore[no-untyped-call]
    results = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        inputs = collate([{"input_ids": s.input_ids, "labels": s.labels} for s in batch])
        with torch.inference_mode():
            losses = trained_token_losses(model, {k: v.to(device) for k, v in inputs.items()})
        counts = [_answer_tokens(s) for s in batch]
        for count, part in zip(counts, torch.split(losses, counts), strict=True):
            results.append(AnswerLikelihood(nll=float(part.mean()), tokens=count))
        if progress is not None:
            progress(len(batch))
    return results


def greedy_answers(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    batch_size: int,
    progress: Progress | None = None,
    adapters: Sequence[str] | None = None,
) -> list[str]:
    """The model's greedy continuation of each prompt (token ids ending with the assistant
    header), up to the end of its turn or max_new_tokens, as text without special tokens; with
    `adapters`, each prompt's through the peft adapter of that name."""
    device = next(model.parameters()).device
    stop = _stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop, pad_token_id=pad
    )
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        # Padded on the left, so that every prompt ends where generation starts.
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        routing = {} if adapters is None else {"adapter_names": list(adapters[start : start + batch_size])}
        with torch.inference_mode():
            output = model.generate(  # type: ignore[operator]  # PeftModel forwards it to the base
                input_ids=input_ids, attention_mask=mask, generation_config=config, **routing
            )
        for row in output[:, width:].tolist():
            answers.append(_answer_text(row, stop, tokenizer))
        if progress is not None:
            progress(len(batch))
    return answers


def _stop_ids(model: Model, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's EOS (the chat turn's end in chat models) and the model's own EOS ids."""
    ids: list[int] = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    for token in [configured] if isinstance(configured, int) else configured or []:
        if token not in ids:
            ids.append(token)
    if not ids:
        raise ConfigError("neither the tokenizer nor the model names an EOS token: generation could not stop")
    return ids


def _answer_text(row: list[int], stop: list[int], tokenizer: PreTrainedTokenizerBase) -> str:
    end = next((index for index, token in enumerate(row) if token in stop), len(row))
    text = tokenizer.decode(row[:end], skip_special_tokens=True)
    assert isinstance(text, str)
    return text.strip()
