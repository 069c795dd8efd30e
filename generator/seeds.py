"""The seed rows a pipeline starts from, built from a leaf's qna.yaml (and, for knowledge, the
chunks of its documents)."""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict

from labtune.contract.common import LeafType
from labtune.generator.chunking import TokenCounter, chunk
from labtune.generator.documents import Document, DocumentSource
from labtune.generator.engine import Row


class _Qna(BaseModel):
    # Validated against InstructLab's schema already; only the fields generation uses are read.
    model_config = ConfigDict(extra="ignore")


class QuestionAnswer(_Qna):
    question: str
    answer: str


class KnowledgeSeed(_Qna):
    context: str
    questions_and_answers: list[QuestionAnswer]


class KnowledgeQna(_Qna):
    domain: str
    document_outline: str
    seed_examples: list[KnowledgeSeed]
    document: DocumentSource


class SkillSeed(_Qna):
    question: str
    answer: str
    context: str | None = None


class SkillQna(_Qna):
    task_description: str
    seed_examples: list[SkillSeed]


def knowledge_rows(
    qna: KnowledgeQna, documents: list[Document], count: TokenCounter, chunk_tokens: int
) -> list[Row]:
    """One row per (document chunk, seed example): the chunk to write about, the seed as example."""
    rows = []
    for document in documents:
        for text in chunk(document.text, count, chunk_tokens):
            for seed in qna.seed_examples:
                rows.append(
                    {
                        "domain": qna.domain,
                        "document_outline": qna.document_outline,
                        "document": text,
                        "source": document.path,
                        "icl_context": seed.context,
                        "icl_pairs": [qa.model_dump() for qa in seed.questions_and_answers],
                    }
                )
    return rows


def skill_rows(qna: SkillQna) -> list[Row]:
    """One row per seed example, which serves as the in-context example."""
    rows: list[Row] = []
    for seed in qna.seed_examples:
        row: dict[str, Any] = {
            "task_description": qna.task_description,
            "icl_question": seed.question,
            "icl_answer": seed.answer,
        }
        if seed.context:
            row["icl_context"] = seed.context
        rows.append(row)
    return rows


def rows_for(
    leaf_type: LeafType,
    contents: dict[str, Any],
    documents: list[Document],
    count: TokenCounter,
    chunk_tokens: int,
) -> list[Row]:
    if leaf_type == "knowledge":
        return knowledge_rows(KnowledgeQna.model_validate(contents), documents, count, chunk_tokens)
    return skill_rows(SkillQna.model_validate(contents))


def _chunk_rows(
    qna: KnowledgeQna, documents: list[Document], count: TokenCounter, chunk_tokens: int
) -> list[Row]:
    return [
        {
            "domain": qna.domain,
            "document_outline": qna.document_outline,
            "document": text,
            "source": document.path,
        }
        for document in documents
        for text in chunk(document.text, count, chunk_tokens)
    ]


def chunk_rows(
    qna: KnowledgeQna, documents: list[Document], count: TokenCounter, chunk_tokens: int, questions: int
) -> list[Row]:
    """One row per document chunk, for the multiple-choice pipeline: the chunk to write questions
    about and how many to write (no seed example: the questions test the document)."""
    return [{**row, "questions": questions} for row in _chunk_rows(qna, documents, count, chunk_tokens)]


def auxiliary_rows(
    qna: KnowledgeQna,
    documents: list[Document],
    count: TokenCounter,
    chunk_tokens: int,
    instructions: dict[str, list[str]],
    rng: random.Random,
) -> list[Row]:
    """One row per document chunk and kind of rewrite, for a pipeline's auxiliary flow: the chunk,
    the kind (`auxiliary`) and one of its instructions, drawn with `rng`."""
    return [
        {**row, "auxiliary": kind, "instruction": rng.choice(instructions[kind])}
        for row in _chunk_rows(qna, documents, count, chunk_tokens)
        for kind in sorted(instructions)
    ]
