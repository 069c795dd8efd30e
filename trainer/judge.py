"""A judge model grading generated answers 1 to 10 against the reference answers written by the
taxonomy's authors (InstructLab's MT-Bench-branch): one request per generated answer, through
the generator's teacher backends, so an endpoint gets the same bounded concurrency, deadlines,
retries, reply bound, CA and API key handling as a teacher (`labtune.generator.teacher_openai`).

A reply without a rating in the asked format, or out of range, leaves that answer unrated (its
`judge` score absent) and is counted; a judge that rates none of a benchmark's answers is a
JudgeError, as is an unreachable one."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from importlib import resources

from labtune.contract.evaluate import EvalExample, ExampleResult, JudgeConfig
from labtune.generator.teacher import CompletionRequest, TeacherError, make_teacher

log = logging.getLogger(__name__)

MIN_RATING, MAX_RATING = 1.0, 10.0
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_REPLY_TOKENS = 512  # room for a short explanation before the rating
_SEED = 0  # greedy in practice (temperature 0); the seed only pins servers that sample anyway

PROMPT = (resources.files("labtune.trainer") / "prompts" / "judge.txt").read_text(encoding="utf-8").strip()
"""The judge's instructions, with `{question}`, `{reference}` and `{answer}` to fill in; the
rating format is MT-Bench's."""


class JudgeError(Exception):
    """The judge could not grade a benchmark: unreachable, failing, or no reply carried a rating."""


def prompt(example: EvalExample, answer: str) -> str:
    question = f"{example.context}\n\n{example.question}" if example.context else example.question
    return PROMPT.format(question=question, reference=example.answer, answer=answer or "(no answer)")


def rating(reply: str | None) -> float | None:
    """The last `[[N]]` of the reply, when it is a rating from 1 to 10."""
    found = _RATING.findall(reply or "")
    if not found:
        return None
    value = float(found[-1])
    return value if MIN_RATING <= value <= MAX_RATING else None


async def _grade(
    judge: JudgeConfig, artifact_root: str, examples: dict[str, EvalExample], results: Sequence[ExampleResult]
) -> list[str | None]:
    from labtune.generator.generator_metrics import GeneratorMetrics

    teacher = make_teacher(judge.teacher, artifact_root, GeneratorMetrics())
    try:
        requests = [
            CompletionRequest(
                prompt=prompt(examples[r.id], r.generated or ""),
                max_tokens=_REPLY_TOKENS,
                temperature=0.0,
                seed=_SEED,
            )
            for r in results
        ]
        return [completion.text for completion in await teacher.complete(requests)]
    finally:
        await teacher.aclose()


def grade(
    benchmark: str,
    judge: JudgeConfig,
    artifact_root: str,
    examples: list[EvalExample],
    results: Sequence[ExampleResult],
) -> None:
    """Sets each result's `judge` rating (None when the reply had none); JudgeError when the judge
    fails or rates none of them."""
    by_id = {example.id: example for example in examples}
    try:
        replies = asyncio.run(_grade(judge, artifact_root, by_id, results))
    except TeacherError as error:
        raise JudgeError(f"judge of benchmark {benchmark}: {error}") from None
    for result, reply in zip(results, replies, strict=True):
        result.judge = rating(reply)
    unrated = [reply for result, reply in zip(results, replies, strict=True) if result.judge is None]
    if results and len(unrated) == len(results):
        first = " ".join((unrated[0] or "(the request was rejected)").split())[:200]
        raise JudgeError(
            f"judge {judge.teacher.model} of benchmark {benchmark} gave no rating in the form "
            f"'Rating: [[N]]' (N from 1 to 10) for any of {len(results)} answers; first reply: {first!r}"
        )
    if unrated:
        log.warning(
            "judge %s of benchmark %s: %d of %d replies carried no rating; those answers are unrated",
            judge.teacher.model,
            benchmark,
            len(unrated),
            len(results),
        )
