"""Multiple-choice questions about knowledge leaves (InstructLab's MMLU-branch, for
`evaluation.multipleChoice`): the multiple-choice pipeline's flow runs over each document chunk,
its judge filters the questions, and each surviving row becomes a ChoiceExample through the
flow's `choice` template, for `labtune evaluate` to score with lm-evaluation-harness."""

from __future__ import annotations

import string

from labtune.contract.evaluate import ChoiceExample
from labtune.contract.records import record_id
from labtune.generator.engine import Row, StageCount, render
from labtune.generator.pipeline import ChoiceTemplate

OUTPUT_STAGE = "choice"
"""The count of rows that became questions (those whose answer named no choice are malformed)."""


def answer_index(answer: str, choices: list[str]) -> int | None:
    """The right choice's index from what the teacher wrote: a letter (`B`, `B)`, `(B)`), a number
    from 1, or a choice's text; None when it names none of them."""
    text = answer.strip().strip("().:").strip()
    if len(text) == 1 and text.upper() in string.ascii_uppercase[: len(choices)]:
        return string.ascii_uppercase.index(text.upper())
    if text.isdigit() and 1 <= int(text) <= len(choices):
        return int(text) - 1
    folded = [choice.casefold() for choice in choices]
    return folded.index(answer.strip().casefold()) if answer.strip().casefold() in folded else None


def to_choices(
    template: ChoiceTemplate, leaf: str, rows: list[Row], *, where: str
) -> tuple[list[ChoiceExample], StageCount]:
    """The rows as questions; a row whose answer names no choice, or whose choices repeat, is
    dropped and counted malformed."""
    questions, malformed = [], 0
    for index, row in enumerate(rows):
        question = render(template.question, row, where)
        choices = [render(choice, row, where) for choice in template.choices]
        answer = answer_index(render(template.answer, row, where), choices)
        if answer is None or not question or not all(choices) or len(set(choices)) != len(choices):
            malformed += 1
            continue
        questions.append(
            ChoiceExample(
                id=record_id(leaf, str(index), question, *choices),
                leaf=leaf,
                leaf_type="knowledge",
                question=question,
                choices=choices,
                answer=answer,
            )
        )
    count = StageCount(stage=OUTPUT_STAGE, input=len(rows), output=len(questions), malformed=malformed)
    return questions, count
