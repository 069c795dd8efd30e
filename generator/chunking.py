"""Token-aware chunking of documents: paragraphs packed into chunks of at most `chunk_tokens`
tokens of the teacher's tokenizer (or a configured one)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

TokenCounter = Callable[[str], int]

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def approximate_tokens(text: str) -> int:
    """About four characters per token: the fallback when no tokenizer is configured."""
    return math.ceil(len(text) / 4)


def _pieces(text: str, count: TokenCounter, limit: int) -> list[tuple[str, int]]:
    """Paragraphs with their token counts; a paragraph over the limit is cut into word runs."""
    pieces = []
    for paragraph in (p.strip() for p in _PARAGRAPH_BREAK.split(text)):
        if not paragraph:
            continue
        tokens = count(paragraph)
        if tokens <= limit:
            pieces.append((paragraph, tokens))
            continue
        words: list[str] = []
        size = 0
        for word in paragraph.split():
            word_tokens = count(" " + word)
            if words and size + word_tokens > limit:
                pieces.append((" ".join(words), size))
                words, size = [], 0
            words.append(word)
            size += word_tokens
        if words:
            pieces.append((" ".join(words), size))
    return pieces


def chunk(text: str, count: TokenCounter, chunk_tokens: int) -> list[str]:
    """Consecutive paragraphs joined into chunks of at most `chunk_tokens` tokens (a single word
    longer than that stays whole)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for piece, tokens in _pieces(text, count, chunk_tokens):
        if current and size + tokens > chunk_tokens:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(piece)
        size += tokens
    if current:
        chunks.append("\n\n".join(current))
    return chunks
