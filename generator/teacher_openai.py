"""A teacher behind any OpenAI-compatible HTTP API (vLLM, KServe, llama.cpp, a hosted API):
chat or completions, bounded concurrency, a deadline on every attempt, retries with backoff, a
bound on the size of a reply, a custom CA, and the API key from a file or the environment.

What a misbehaving server can do is bounded and named. A request takes at most
`request_bound_seconds`; a reply that is not the API's (an HTML page, truncated JSON, another
shape) is retried, then its sample dropped and counted; a reply over `max_reply_bytes` is dropped
and counted unread; 401/403/404 stop the run at once, saying which setting to check."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, TypeVar

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field, ValidationError

from labtune.contract import ConfigError
from labtune.contract.generate import TeacherConfig
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.teacher import Completion, CompletionRequest, TeacherError

log = logging.getLogger(__name__)

# Replies to a single bad request (too long a prompt, an unsupported parameter value): that
# sample is dropped and counted.
_REJECTED = frozenset({400, 422})
# Statuses worth another attempt, as the openai client judges them (it retries these and 5xx):
# request timeout, lock conflict, rate limit. Any other 4xx stops the run at once.
_RETRIED = frozenset({408, 409, 429})
_MAX_BACKOFF_SECONDS = 8.0
# A server that is no OpenAI API (a web UI, a proxy answering 200 with its own page) answers
# every request so, while a working teacher garbles a reply now and then. This many unusable
# replies in a row with no good one between them is far past chance for a working teacher, and
# stops a wrong endpoint within its first round of requests (32 in flight by default) instead of
# dropping every sample of the run.
_UNUSABLE_IN_A_ROW = 16


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


def backoff_seconds(config: TeacherConfig, retry: int) -> float:
    """The longest wait before retry number `retry` (1, 2, …); jitter shortens it by up to 25%."""
    return min(config.retry_backoff_seconds * 2.0 ** min(retry - 1, 30), _MAX_BACKOFF_SECONDS)


class OpenAITeacher:
    def __init__(self, config: TeacherConfig, metrics: GeneratorMetrics) -> None:
        if not config.url:
            raise ConfigError("teacher.url is required for the openai backend")
        http_client = openai.DefaultAsyncHttpxClient(
            verify=ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True,
            event_hooks={"response": [self._bound_reply]},
            # Uncompressed, so that max_reply_bytes bounds what is held in memory.
            headers={"Accept-Encoding": "identity"},
        )
        # Retries are ours (`_attempts`): the client's would not cover malformed replies nor put a
        # deadline on each attempt, and would claim retries for replies it never retries.
        self._client = openai.AsyncOpenAI(
            base_url=config.url,
            api_key=api_key(config) or "unused",  # servers without auth ignore it
            timeout=config.timeout_seconds,
            max_retries=0,
            http_client=http_client,
        )
        self._config = config
        self._metrics = metrics
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._unusable_in_a_row = 0
        log.info(
            "teacher %s at %s: each request gives up after at most %.1f s (%d attempts of at most %g s "
            "and the waits between them)",
            config.model,
            config.url,
            self.request_bound_seconds,
            config.max_retries + 1,
            config.timeout_seconds,
        )

    @property
    def model_name(self) -> str:
        return self._config.model

    @property
    def request_bound_seconds(self) -> float:
        """The longest one request takes once it has a slot: every attempt running into its
        deadline, and the longest wait before each retry."""
        config = self._config
        waits = sum(backoff_seconds(config, retry) for retry in range(1, config.max_retries + 1))
        return config.timeout_seconds * (config.max_retries + 1) + waits

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        # Every request is started at once; the semaphore keeps max_concurrency of them in flight,
        # so the server always has a full queue while work remains.
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def aclose(self) -> None:
        await self._client.close()

    async def _bound_reply(self, response: httpx2.Response) -> None:
        """Response hook, before the body is read: a body over the bound is never read whole."""
        limit = self._config.max_reply_bytes
        length = response.headers.get("content-length", "")
        if response.is_success and length.isdigit() and int(length) > limit:
            raise _Oversized(f"{length} bytes announced")
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _BoundedStream(response.stream, limit, cut=not response.is_success)

    async def _one(self, request: CompletionRequest) -> Completion:
        async with self._slots:
            started = time.monotonic()
            try:
                return await self._attempts(request)
            finally:
                self._metrics.latency.observe(time.monotonic() - started)

    async def _attempts(self, request: CompletionRequest) -> Completion:
        config = self._config
        last: Exception | None = None
        for attempt in range(config.max_retries + 1):
            if attempt:
                # Jitter keeps requests that failed together from retrying together.
                await asyncio.sleep(backoff_seconds(config, attempt) * (1 - 0.25 * random.random()))
            try:
                # The client's timeout limits each read, not the whole reply: a server that
                # trickles bytes would pass it; this deadline does not let it.
                async with asyncio.timeout(config.timeout_seconds):
                    completion = await self._send(request)
            except _Oversized as error:
                self._unusable(
                    f"was larger than teacher.endpoint.maxReplyBytes ({config.max_reply_bytes}): {error}",
                    "does it ignore max_tokens? If replies this large are right, raise maxReplyBytes",
                )
                return self._dropped("oversized")
            except _Malformed as error:
                self._unusable(
                    str(error),
                    "it does not speak the OpenAI API: is the URL the base of an OpenAI-compatible API, "
                    "e.g. http://teacher:8000/v1?",
                )
                last = error
            except openai.APIStatusError as error:
                if error.status_code in _REJECTED:
                    self._unusable_in_a_row = 0  # a proper API error: the server speaks the API
                    return self._dropped("rejected")
                if error.status_code not in _RETRIED and error.status_code < 500:
                    self._metrics.requests.labels("failed").inc()
                    raise TeacherError(self._refusal(error)) from None
                last = error
            except (openai.APIConnectionError, TimeoutError) as error:
                last = error
            else:
                self._unusable_in_a_row = 0
                self._metrics.requests.labels("ok").inc()
                return completion
        if isinstance(last, _Malformed):
            return self._dropped("malformed")
        self._metrics.requests.labels("failed").inc()
        retries = f" after {config.max_retries} retries" if config.max_retries else ""
        raise TeacherError(
            f"teacher {config.model} at {config.url} failed{retries}: {self._describe(last)}"
        ) from None

    def _dropped(self, outcome: str) -> Completion:
        self._metrics.requests.labels(outcome).inc()
        self._metrics.errors.labels(f"teacher_{outcome}").inc()
        return Completion(text=None)

    def _unusable(self, reply: str, hint: str) -> None:
        """Counts an unusable reply (`reply` says how); too many in a row stop the run with `hint`."""
        self._unusable_in_a_row += 1
        config = self._config
        log.warning("teacher %s at %s: a reply %s", config.model, config.url, reply)
        if self._unusable_in_a_row >= _UNUSABLE_IN_A_ROW:
            self._metrics.requests.labels("failed").inc()
            raise TeacherError(
                f"teacher at {config.url} gave {self._unusable_in_a_row} unusable replies in a row, "
                f"the last {reply}: {hint}"
            ) from None

    def _refusal(self, error: openai.APIStatusError) -> str:
        config = self._config
        where = f"teacher at {config.url}"
        said = f" (the server said: {error.message})"
        if error.status_code == 401:
            return (
                f"{where} refused the API key (401 Unauthorized): "
                f"check teacher.endpoint.apiKeySecretRef{said}"
            )
        if error.status_code == 403:
            return (
                f"{where} denied access (403 Forbidden): check that the API key in "
                f"teacher.endpoint.apiKeySecretRef may use model {config.model!r}{said}"
            )
        if error.status_code == 404:
            return (
                f"{where} has no such API or model (404 Not Found): is the URL's path right (…/v1) "
                f"and the model name {config.model!r} served?{said}"
            )
        return f"{where} answered {error.status_code} to a request for model {config.model!r}{said}"

    def _describe(self, error: Exception | None) -> str:
        if isinstance(error, TimeoutError):
            limit = self._config.timeout_seconds
            return f"TimeoutError: no complete reply within teacher.timeoutSeconds ({limit:g} s)"
        described = f"{type(error).__name__}: {error}"
        # "Connection error." would hide that the server did answer, with a reply cut short.
        if isinstance(error, openai.APIConnectionError) and isinstance(
            error.__cause__, httpx2.RemoteProtocolError
        ):
            described += f" (the reply was cut short: {error.__cause__})"
        return described

    async def _send(self, request: CompletionRequest) -> Completion:
        config = self._config
        text: str | None
        if config.api == "completions":
            prompt = f"{request.system}\n\n{request.prompt}" if request.system else request.prompt
            raw = await self._client.completions.with_raw_response.create(
                model=config.model,
                prompt=prompt,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
            )
            reply = _parse(_TextReply, raw.content)
            text = reply.choices[0].text
            usage = reply.usage or _Usage()
        else:
            messages: list[ChatCompletionMessageParam] = (
                [{"role": "system", "content": request.system}] if request.system else []
            )
            messages.append({"role": "user", "content": request.prompt})
            raw_chat = await self._client.chat.completions.with_raw_response.create(
                model=config.model,
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
            )
            chat = _parse(_ChatReply, raw_chat.content)
            text = chat.choices[0].message.content
            usage = chat.usage or _Usage()
        return Completion(
            text=text,
            prompt_tokens=usage.prompt_tokens or 0,
            completion_tokens=usage.completion_tokens or 0,
        )


class _Malformed(Exception):
    """A reply that is not the OpenAI API's: worth another attempt, then its sample is dropped."""


class _Oversized(Exception):
    """A successful reply larger than max_reply_bytes: dropped unread."""


class _BoundedStream(httpx2.AsyncByteStream):
    """A reply body read up to `limit` bytes. Beyond it, a successful reply is an error (it is
    dropped anyway) and an error reply is cut (only its first words go into the message)."""

    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, *, cut: bool) -> None:
        self._inner = inner
        self._limit = limit
        self._cut = cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        left = self._limit
        async for chunk in self._inner:
            if len(chunk) > left:
                if not self._cut:
                    raise _Oversized(f"more than {self._limit} bytes sent")
                yield chunk[:left]
                return
            left -= len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


# What the teacher uses of a reply, checked at the boundary: other fields may be anything, so a
# server that differs from OpenAI's in what the generator ignores is still a working teacher.
class _Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Message(BaseModel):
    content: str | None = None


class _ChatChoice(BaseModel):
    message: _Message


class _TextChoice(BaseModel):
    text: str


class _ChatReply(BaseModel):
    choices: Annotated[list[_ChatChoice], Field(min_length=1)]
    usage: _Usage | None = None


class _TextReply(BaseModel):
    choices: Annotated[list[_TextChoice], Field(min_length=1)]
    usage: _Usage | None = None


_ReplyT = TypeVar("_ReplyT", _ChatReply, _TextReply)


def _parse(model: type[_ReplyT], body: bytes) -> _ReplyT:
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        excerpt = body[:80].decode(errors="replace")
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            raise _Malformed(f"was not JSON: {excerpt!r}") from None
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise _Malformed(f"was JSON of another shape ({where}: {first['msg']}): {excerpt!r}") from None
