"""The OpenAI-compatible teacher against a small scripted HTTP server on loopback: bounded
concurrency, retries, rejections, API key, chat and completions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from labtune.contract import ConfigError
from labtune.contract.generate import TeacherConfig
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.teacher import Completion, CompletionRequest, TeacherError
from labtune.generator.teacher_openai import OpenAITeacher
from labtune_dev.openai_server import Script
from labtune_dev.openai_server import serve as _serve

if TYPE_CHECKING:
    from conftest import TlsFiles


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    with _serve() as served:
        yield served


def _requests(*prompts: str) -> list[CompletionRequest]:
    return [
        CompletionRequest(prompt=p, system="sys", max_tokens=8, temperature=0.5, seed=i)
        for i, p in enumerate(prompts)
    ]


def _completions(
    config: TeacherConfig, requests: list[CompletionRequest], metrics: GeneratorMetrics | None = None
) -> list[Completion]:
    async def run() -> list[Completion]:
        teacher = OpenAITeacher(config, metrics or GeneratorMetrics())
        try:
            return await teacher.complete(requests)
        finally:
            await teacher.aclose()

    return asyncio.run(run())


def _complete(
    config: TeacherConfig, requests: list[CompletionRequest], metrics: GeneratorMetrics | None = None
) -> list[str | None]:
    return [c.text for c in _completions(config, requests, metrics)]


def test_chat_with_bounded_concurrency(server: tuple[str, Script], monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    script.delay = 0.1
    monkeypatch.setenv("TEACHER_KEY", "from-env")
    config = TeacherConfig(model="m", url=url, max_concurrency=3, api_key_env="TEACHER_KEY")
    metrics = GeneratorMetrics()
    prompts = [f"p{i}" for i in range(12)]
    completions = _completions(config, _requests(*prompts), metrics)
    assert [c.text for c in completions] == [f"re: {p}" for p in prompts]
    assert {(c.prompt_tokens, c.completion_tokens) for c in completions} == {(3, 2)}  # the usage
    assert script.max_in_flight == 3
    path, body, auth = script.calls[0]
    assert path == "/v1/chat/completions"
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert (body["max_tokens"], body["temperature"], body["model"]) == (8, 0.5, "m")
    assert auth == "Bearer from-env"
    assert (
        metrics.registry.get_sample_value("labtune_generator_teacher_requests_total", {"outcome": "ok"}) == 12
    )
    assert metrics.registry.get_sample_value("labtune_generator_teacher_request_seconds_count") == 12


def test_completions_api_and_key_file(server: tuple[str, Script], tmp_path: Path) -> None:
    url, script = server
    (tmp_path / "key").write_text("from-file\n")
    config = TeacherConfig(model="m", url=url, api="completions", api_key_file=str(tmp_path / "key"))
    assert _complete(config, _requests("hello")) == ["re: sys\n\nhello"]
    path, _, auth = script.calls[0]
    assert (path, auth) == ("/v1/completions", "Bearer from-file")


def test_rejected_request_is_dropped_not_fatal(server: tuple[str, Script]) -> None:
    url, script = server
    script.status["too long"] = 400
    metrics = GeneratorMetrics()
    texts = _complete(TeacherConfig(model="m", url=url), _requests("ok", "too long"), metrics)
    assert texts == ["re: ok", None]
    assert (
        metrics.registry.get_sample_value("labtune_generator_teacher_requests_total", {"outcome": "rejected"})
        == 1
    )


def test_failing_server_is_retried_then_one_clear_error(server: tuple[str, Script]) -> None:
    url, script = server
    script.status["boom"] = 503
    with pytest.raises(TeacherError, match=r"teacher m at .* failed after 2 retries: InternalServerError"):
        _complete(TeacherConfig(model="m", url=url, max_retries=2), _requests("boom"))
    assert len(script.calls) == 3


def test_unreachable_teacher(tmp_path: Path) -> None:
    config = TeacherConfig(model="m", url="http://127.0.0.1:9/v1", max_retries=1, timeout_seconds=2)
    with pytest.raises(TeacherError, match="failed after 1 retries: APIConnectionError"):
        _complete(config, _requests("hello"))
    with pytest.raises(ConfigError, match="cannot read the teacher API key file"):
        OpenAITeacher(
            TeacherConfig(model="m", url="http://x", api_key_file=str(tmp_path / "none")), GeneratorMetrics()
        )


def test_private_tls_endpoint_with_a_custom_ca(tmp_path: Path, make_tls: Callable[[Path], TlsFiles]) -> None:
    tls = make_tls(tmp_path)
    with _serve(tls) as (url, _):
        assert _complete(TeacherConfig(model="m", url=url, ca_file=str(tls.ca)), _requests("hi")) == [
            "re: hi"
        ]
        with pytest.raises(TeacherError, match="APIConnectionError"):
            _complete(TeacherConfig(model="m", url=url, max_retries=0), _requests("hi"))
