"""The one interface every teacher backend implements, what flows through it, and the factory of
the backends (the generator's teacher, and `labtune evaluate`'s judge)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from labtune.contract import resolve_artifact

if TYPE_CHECKING:
    from labtune.contract.generate import TeacherConfig
    from labtune.generator.generator_metrics import GeneratorMetrics


class TeacherError(Exception):
    """The teacher cannot be used (unreachable, failing after retries, misconfigured): the run
    stops with this one-line message and keeps the progress already made."""


class CompletionRequest(BaseModel, frozen=True):
    """One prompt for the teacher: a single user turn (and an optional system turn)."""

    prompt: str
    system: str | None = None
    max_tokens: int
    temperature: float
    seed: int


class Completion(BaseModel):
    """The teacher's reply; `text` is None when the teacher rejected this one request (counted
    and dropped, never fatal)."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Teacher(Protocol):
    """A model that completes prompts. Implementations bound their own concurrency or batching;
    callers hand over everything that can run at once."""

    @property
    def model_name(self) -> str: ...

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        """One completion per request, in order."""
        ...

    async def aclose(self) -> None: ...


def make_teacher(config: TeacherConfig, artifact_root: str, metrics: GeneratorMetrics) -> Teacher:
    """The backend the config names (the in-process one loads its model now)."""
    if config.backend == "transformers":
        from labtune.generator.teacher_transformers import TransformersTeacher

        return TransformersTeacher(
            resolve_artifact(config.model, artifact_root), batch_size=config.batch_size, metrics=metrics
        )
    from labtune.generator.teacher_openai import OpenAITeacher

    return OpenAITeacher(config, metrics)
