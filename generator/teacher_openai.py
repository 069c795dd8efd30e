"""A teacher behind any OpenAI-compatible HTTP API (vLLM, KServe, llama.cpp, a hosted API):
chat or completions, bounded concurrency, timeouts, retries with backoff (the `openai` client's
own), a custom CA, and the API key from a file or the environment."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

import openai
from openai.types.chat import ChatCompletionMessageParam

from labtune.contract import ConfigError
from labtune.contract.generate import TeacherConfig
from labtune.generator.metrics import GeneratorMetrics
from labtune.generator.teacher import Completion, CompletionRequest, TeacherError

# Replies to a single bad request (too long a prompt, an unsupported parameter value): that
# sample is dropped and counted. Anything else that persists after the retries stops the run.
_REJECTED = (openai.BadRequestError, openai.UnprocessableEntityError)


def api_key(config: TeacherConfig) -> str | None:
    """The API key: from `api_key_file` when set, else from the `api_key_env` variable."""
    if config.api_key_file:
        try:
            return Path(config.api_key_file).read_text().strip()
        except OSError as error:
            raise ConfigError(
                f"cannot read the teacher API key file {config.api_key_file}: {error.strerror}"
            ) from None
    return os.environ.get(config.api_key_env) if config.api_key_env else None


class OpenAITeacher:
    def __init__(self, config: TeacherConfig, metrics: GeneratorMetrics) -> None:
        if not config.url:
            raise ConfigError("teacher.url is required for the openai backend")
        http_client = (
            openai.DefaultAsyncHttpxClient(verify=ssl.create_default_context(cafile=config.ca_file))
            if config.ca_file
            else None
        )
        self._client = openai.AsyncOpenAI(
            base_url=config.url,
            api_key=api_key(config) or "unused",  # servers without auth ignore it
            timeout=config.timeout_seconds,
            max_retries=config.max_retries,
            http_client=http_client,
        )
        self._config = config
        self._metrics = metrics
        self._slots = asyncio.Semaphore(config.max_concurrency)

    @property
    def model_name(self) -> str:
        return self._config.model

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        # Every request is started at once; the semaphore keeps max_concurrency of them in flight,
        # so the server always has a full queue while work remains.
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def aclose(self) -> None:
        await self._client.close()

    async def _one(self, request: CompletionRequest) -> Completion:
        async with self._slots:
            started = time.monotonic()
            try:
                completion = await self._send(request)
            except _REJECTED:
                self._metrics.requests.labels("rejected").inc()
                self._metrics.errors.labels("teacher_rejected").inc()
                return Completion(text=None)
            except openai.APIError as error:
                self._metrics.requests.labels("failed").inc()
                raise TeacherError(
                    f"teacher {self._config.model} at {self._config.url} failed after "
                    f"{self._config.max_retries} retries: {type(error).__name__}: {error}"
                ) from None
            finally:
                self._metrics.latency.observe(time.monotonic() - started)
        self._metrics.requests.labels("ok").inc()
        self._metrics.record_tokens(completion.prompt_tokens, completion.completion_tokens)
        return completion

    async def _send(self, request: CompletionRequest) -> Completion:
        config = self._config
        if config.api == "completions":
            prompt = f"{request.system}\n\n{request.prompt}" if request.system else request.prompt
            reply = await self._client.completions.create(
                model=config.model,
                prompt=prompt,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
            )
            text = reply.choices[0].text if reply.choices else None
            usage = reply.usage
        else:
            messages: list[ChatCompletionMessageParam] = (
                [{"role": "system", "content": request.system}] if request.system else []
            )
            messages.append({"role": "user", "content": request.prompt})
            chat = await self._client.chat.completions.create(
                model=config.model,
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
            )
            text = chat.choices[0].message.content if chat.choices else None
            usage = chat.usage
        return Completion(
            text=text,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
