"""Chat-template rendering and loss masks: which tokens of a sample are trained.

A token is trained when it overlaps the content of a trained message: the assistant turns, or
with `unmask` every message but the system prompt (InstructLab's semantics). An assistant turn
also trains the end-of-turn text up to and including the tokenizer's EOS string, so the model
learns to stop. Role headers and template boilerplate are never trained.

The content spans are found by rendering the conversation with private-use sentinels around
each message's content, then removing them; the clean text is tokenized once, as at inference,
and tokens are mapped to spans through the tokenizer's character offsets. This works with any
chat template that renders content verbatim, without `{% generation %}` markers.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from labtune.contract import ConfigError
from labtune.contract.records import Record

IGNORE_INDEX = -100  # the label value transformers' loss skips
_OPEN, _CLOSE = "\ue000", "\ue001"


@dataclass(frozen=True)
class TokenizedSample:
    input_ids: list[int]
    labels: list[int]
    """input_ids where trained, IGNORE_INDEX elsewhere."""


def trained_spans(sample: Record, tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans [start, end) whose tokens are trained."""
    marked = [{"role": m.role, "content": f"{_OPEN}{m.content}{_CLOSE}"} for m in sample.messages]
    if any(_OPEN in m.content or _CLOSE in m.content for m in sample.messages):
        raise ConfigError("a message contains the private-use characters U+E000/U+E001")
    rendered = tokenizer.apply_chat_template(marked, tokenize=False)
    assert isinstance(rendered, str)  # tokenize=False renders text
    if rendered.count(_OPEN) != len(marked) or rendered.count(_CLOSE) != len(marked):
        raise ConfigError("the chat template does not render every message's content verbatim")
    text_parts: list[str] = []
    contents: list[tuple[int, int]] = []
    cursor = length = 0
    for _ in marked:
        start, end = rendered.index(_OPEN, cursor), rendered.index(_CLOSE, cursor)
        text_parts += [rendered[cursor:start], rendered[start + 1 : end]]
        length += start - cursor
        contents.append((length, length + end - start - 1))
        length += end - start - 1
        cursor = end + 1
    text = "".join(text_parts) + rendered[cursor:]

    roles = {m.role for m in sample.messages} - {"system"} if sample.unmask else {"assistant"}
    spans = []
    for index, (message, (start, end)) in enumerate(zip(sample.messages, contents, strict=True)):
        if message.role not in roles:
            continue
        if message.role == "assistant" and tokenizer.eos_token:
            limit = contents[index + 1][0] if index + 1 < len(contents) else len(text)
            eos = text.find(tokenizer.eos_token, end, limit)
            if eos != -1:
                end = eos + len(tokenizer.eos_token)
        spans.append((start, end))
    return text, spans


def tokenize_sample(sample: Record, tokenizer: PreTrainedTokenizerBase) -> TokenizedSample:
    """input_ids of the rendered conversation, labelled where a token overlaps a trained span."""
    text, spans = trained_spans(sample, tokenizer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = encoded["input_ids"]
    offsets: list[tuple[int, int]] = encoded["offset_mapping"]
    labels = []
    span = 0
    for token, (start, end) in zip(input_ids, offsets, strict=True):
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        overlaps = span < len(spans) and start < end and spans[span][0] < end
        labels.append(token if overlaps else IGNORE_INDEX)
    return TokenizedSample(input_ids=input_ids, labels=labels)
