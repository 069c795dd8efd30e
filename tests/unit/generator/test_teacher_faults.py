"""A misbehaving teacher against the OpenAI teacher, on a real HTTP server on loopback: replies
that are not the API's, oversized replies, refusals, a reply trickled past the deadline, server
errors; and the teacher URL check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from labtune.api.synthetic_data_run_types import SyntheticDataRun, TeacherEndpoint
from labtune.api.taxonomy_types import Taxonomy
from labtune.contract.generate import TeacherConfig
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.teacher import CompletionRequest, TeacherError
from labtune.generator.teacher_openai import OpenAITeacher
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run.synthetic_data_run_builders import build_generate_config

Reply = Callable[[BaseHTTPRequestHandler], None]


def _send(
    status: int, body: bytes, content_type: str = "application/json", length: int | None = None
) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body) if length is None else length))
        handler.end_headers()
        handler.wfile.write(body)
        if length is not None:
            handler.close_connection = True  # the body ends short of what was announced

    return reply


def _json(status: int, body: object) -> Reply:
    return _send(status, json.dumps(body).encode())


OK = _json(
    200,
    {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    },
)
HTML = _send(200, b"<!doctype html><html><body>Welcome to nginx!</body></html>", "text/html")


def _error(status: int) -> Reply:
    return _json(status, {"error": {"message": f"no ({status})", "type": "error"}})


def _chunked(total: int, chunk: int = 16 * 1024) -> Reply:
    """A 200 reply of `total` bytes with no Content-Length, as a streaming server sends it."""

    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(total // chunk):
            handler.wfile.write(b"%x\r\n%s\r\n" % (chunk, b" " * chunk))
        handler.wfile.write(b"0\r\n\r\n")

    return reply


def _trickle(every: float, count: int) -> Reply:
    """A 200 reply sent one byte each `every` seconds: each read is quick, the whole is not."""

    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(count))
        handler.end_headers()
        for _ in range(count):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(every)

    return reply


class Script:
    """The server answers with `replies` in order, then with `default`; `calls` counts requests."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default: Reply = OK
        self.calls = 0
        self.lock = threading.Lock()

    def next(self) -> Reply:
        with self.lock:
            self.calls += 1
            return self.replies.popleft() if self.replies else self.default


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            # The client may give up on a reply midway, as it should.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                script.next()(self)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    httpd.shutdown()


def _config(url: str, **fields: object) -> TeacherConfig:
    # Quick retries so that the faults below take milliseconds.
    return TeacherConfig.model_validate(
        {"model": "m", "url": url, "max_retries": 1, "retry_backoff_seconds": 0.01, **fields}
    )


def _complete(config: TeacherConfig, n: int = 1, metrics: GeneratorMetrics | None = None) -> list[str | None]:
    requests = [CompletionRequest(prompt=f"p{i}", max_tokens=8, temperature=0.0, seed=i) for i in range(n)]

    async def run() -> list[str | None]:
        teacher = OpenAITeacher(config, metrics or GeneratorMetrics())
        try:
            return [c.text for c in await teacher.complete(requests)]
        finally:
            await teacher.aclose()

    return asyncio.run(run())


def _count(metrics: GeneratorMetrics, outcome: str) -> tuple[float | None, float | None]:
    """Requests with this outcome, and errors of kind teacher_<outcome>."""
    registry = metrics.registry
    return (
        registry.get_sample_value("labtune_generator_teacher_requests_total", {"outcome": outcome}),
        registry.get_sample_value("labtune_generator_errors_total", {"kind": f"teacher_{outcome}"}),
    )


def test_html_page_with_200_is_retried_then_dropped_and_counted(server: tuple[str, Script]) -> None:
    url, script = server
    script.default = HTML
    metrics = GeneratorMetrics()
    assert _complete(_config(url), metrics=metrics) == [None]
    assert script.calls == 2  # the first attempt and one retry
    assert _count(metrics, "malformed") == (1, 1)
    assert _count(metrics, "ok") == (None, None)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(_send(200, b'{"id": "x", "choices": [{"index'), id="truncated-json"),
        pytest.param(_send(200, b""), id="empty-body"),
        pytest.param(_json(200, {"hello": "world"}), id="no-choices"),
        pytest.param(_json(200, {"id": "x", "choices": None}), id="null-choices"),
        pytest.param(_json(200, {"id": "x", "choices": []}), id="empty-choices"),
        pytest.param(_json(200, {"choices": [{"index": 0, "message": "fine"}]}), id="message-not-object"),
        pytest.param(_json(200, [1, 2]), id="a-list"),
    ],
)
def test_reply_of_another_shape_is_dropped_and_counted(server: tuple[str, Script], reply: Reply) -> None:
    url, script = server
    script.default = reply
    metrics = GeneratorMetrics()
    assert _complete(_config(url, max_retries=0), metrics=metrics) == [None]
    assert _count(metrics, "malformed") == (1, 1)


def test_malformed_reply_then_a_good_one_is_a_good_reply(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies.extend([_send(200, b'{"choices": [{"mess'), OK])
    metrics = GeneratorMetrics()
    assert _complete(_config(url), metrics=metrics) == ["fine"]
    assert script.calls == 2
    assert _count(metrics, "ok") == (1, None)
    assert _count(metrics, "malformed") == (None, None)


def test_completions_api_refuses_a_chat_shaped_reply(server: tuple[str, Script]) -> None:
    url, _ = server
    metrics = GeneratorMetrics()
    assert _complete(_config(url, api="completions", max_retries=0), metrics=metrics) == [None]
    assert _count(metrics, "malformed") == (1, 1)


def test_an_endpoint_that_is_no_openai_api_stops_the_run(server: tuple[str, Script]) -> None:
    url, script = server
    script.default = HTML
    with pytest.raises(TeacherError) as error:
        _complete(_config(url, max_retries=0, max_concurrency=4), n=40)
    assert str(error.value) == (
        f"teacher at {url} gave 16 unusable replies in a row, the last was not JSON: "
        "'<!doctype html><html><body>Welcome to nginx!</body></html>': it does not speak the OpenAI API: "
        "is the URL the base of an OpenAI-compatible API, e.g. http://teacher:8000/v1?"
    )
    assert script.calls < 40


def test_a_teacher_whose_every_reply_is_oversized_stops_the_run(server: tuple[str, Script]) -> None:
    url, script = server
    script.default = _send(200, b" " * 100_000)
    with pytest.raises(TeacherError) as error:
        _complete(_config(url, max_reply_bytes=65536, max_concurrency=4), n=40)
    assert str(error.value) == (
        f"teacher at {url} gave 16 unusable replies in a row, the last was larger than "
        "teacher.endpoint.maxReplyBytes (65536): 100000 bytes announced: does it ignore max_tokens? "
        "If replies this large are right, raise maxReplyBytes"
    )


def test_good_replies_between_malformed_ones_keep_the_run_going(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies.extend([HTML, OK] * 20)
    metrics = GeneratorMetrics()
    texts = _complete(_config(url, max_retries=0, max_concurrency=1), n=40, metrics=metrics)
    assert texts == [None, "fine"] * 20
    assert _count(metrics, "malformed") == (20, 20)


def test_body_cut_by_the_connection_is_retried_then_named(server: tuple[str, Script]) -> None:
    url, script = server
    script.default = _send(200, b'{"id": "x", "choi', length=500)
    with pytest.raises(
        TeacherError,
        match=r"failed after 1 retries: APIConnectionError: Connection error\. \(the reply was cut short: "
        r"peer closed connection without sending complete message body",
    ):
        _complete(_config(url))
    assert script.calls == 2


def _peak_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(_send(200, b" " * 4_000_000), id="content-length"),
        pytest.param(_chunked(4_000_000), id="chunked"),
    ],
)
def test_oversized_reply_is_dropped_unread_and_counted(server: tuple[str, Script], reply: Reply) -> None:
    url, script = server
    script.default = reply
    metrics = GeneratorMetrics()
    texts: list[str | None] = []
    peak = _peak_bytes(lambda: texts.extend(_complete(_config(url, max_reply_bytes=65536), metrics=metrics)))
    assert texts == [None]
    assert script.calls == 1  # not retried: a teacher that ignores max_tokens would do it again
    assert _count(metrics, "oversized") == (1, 1)
    assert peak < 2_000_000  # the 4 MB were never held


def test_announced_oversized_reply_is_dropped_before_its_body(server: tuple[str, Script]) -> None:
    url, script = server

    def announce(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "4000000")
        handler.end_headers()
        handler.wfile.flush()
        time.sleep(2)  # a body that would take this long is not waited for

    script.default = announce
    metrics = GeneratorMetrics()
    started = time.monotonic()
    assert _complete(_config(url, max_reply_bytes=65536, timeout_seconds=5), metrics=metrics) == [None]
    assert time.monotonic() - started < 1
    assert _count(metrics, "oversized") == (1, 1)


def test_oversized_error_reply_is_cut_and_still_named(server: tuple[str, Script]) -> None:
    url, script = server
    script.default = _send(404, b"<html>" + b"x" * 4_000_000, "text/html")

    def refused() -> None:
        with pytest.raises(TeacherError, match=r"404 Not Found"):
            _complete(_config(url, max_reply_bytes=65536))

    assert _peak_bytes(refused) < 2_000_000


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "refused the API key (401 Unauthorized): check teacher.endpoint.apiKeySecretRef"),
        (403, "denied access (403 Forbidden): check that the API key in teacher.endpoint.apiKeySecretRef"),
        (
            404,
            "has no such API or model (404 Not Found): is the URL's path right (…/v1) and the model name 'm'",
        ),
        (405, "answered 405 to a request for model 'm'"),
    ],
)
def test_refusal_fails_at_once_in_words_that_say_so(
    server: tuple[str, Script], status: int, words: str
) -> None:
    url, script = server
    script.default = _error(status)
    metrics = GeneratorMetrics()
    with pytest.raises(TeacherError) as error:
        _complete(_config(url, max_retries=3), metrics=metrics)
    assert str(error.value).startswith(f"teacher at {url} {words}")
    assert str(error.value).endswith(f"(the server said: Error code: {status} - no ({status}))")
    assert "retries" not in str(error.value)
    assert script.calls == 1
    assert _count(metrics, "failed") == (1, None)


def test_server_errors_then_ok_are_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.replies.extend([_error(500), _error(503), _error(429)])
    metrics = GeneratorMetrics()
    assert _complete(_config(url, max_retries=3), metrics=metrics) == ["fine"]
    assert script.calls == 4
    assert _count(metrics, "ok") == (1, None)


def test_server_errors_past_the_retry_budget_say_how_many_retries(server: tuple[str, Script]) -> None:
    url, script = server
    script.default = _error(502)
    with pytest.raises(TeacherError, match=r"failed after 2 retries: InternalServerError: Error code: 502"):
        _complete(_config(url, max_retries=2))
    assert script.calls == 3
    script.calls = 0
    with pytest.raises(TeacherError, match=r"at .*/v1 failed: InternalServerError"):
        _complete(_config(url, max_retries=0))
    assert script.calls == 1


def test_trickled_reply_is_cut_by_the_deadline_and_the_bound_holds(server: tuple[str, Script]) -> None:
    url, script = server
    script.default = _trickle(every=0.05, count=100)  # 5 s in all, a byte every 50 ms
    config = _config(url, timeout_seconds=0.5, max_retries=1, retry_backoff_seconds=0.1)
    bound = OpenAITeacher(config, GeneratorMetrics()).request_bound_seconds
    assert bound == pytest.approx(0.5 * 2 + 0.1)
    started = time.monotonic()
    with pytest.raises(
        TeacherError,
        match=r"failed after 1 retries: TimeoutError: no complete reply within teacher\.timeoutSeconds "
        r"\(0\.5 s\)",
    ):
        _complete(config)
    elapsed = time.monotonic() - started
    assert script.calls == 2
    assert 2 * 0.5 <= elapsed <= bound + 0.5


def test_request_bound_is_attempts_times_timeout_plus_capped_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bound(**fields: object) -> float:
        return OpenAITeacher(_config("http://teacher/v1", **fields), GeneratorMetrics()).request_bound_seconds

    # Defaults: 6 attempts of 120 s, waits of 0.5, 1, 2, 4 and 8 s.
    caplog.set_level(logging.INFO, "labtune.generator.teacher_openai")
    assert bound(max_retries=5, retry_backoff_seconds=0.5) == 720 + 15.5
    assert "teacher m at http://teacher/v1: each request gives up after at most 735.5 s" in caplog.text
    # Waits never exceed 8 s.
    assert bound(max_retries=7, retry_backoff_seconds=0.5, timeout_seconds=10) == 80 + 15.5 + 16
    assert bound(max_retries=0, timeout_seconds=3) == 3


@pytest.mark.parametrize(
    "url",
    [
        "ftp://teacher/v1",
        "teacher:8000/v1",
        "teacher",
        "http:///v1",
        "http://teacher:8000/v1?api-version=1",
        "http://teacher:8000/v1#top",
        "http://teacher:port/v1",
        "http://teacher:0/v1",
        "",
    ],
)
def test_teacher_url_must_be_an_http_url_with_a_host(url: str) -> None:
    with pytest.raises(ValidationError, match=r"must be an http:// or https:// URL with a host and no query"):
        TeacherConfig(model="m", url=url)


def test_good_teacher_urls_and_the_reply_bound_of_the_crd() -> None:
    for url in ("http://teacher:8000/v1", "https://api.example.com/v1", "http://[::1]:8000/v1"):
        assert TeacherConfig(model="m", url=url).url == url
    endpoint = TeacherEndpoint.model_validate({"url": "http://teacher:8000/v1", "model": "m"})
    assert endpoint.max_reply_bytes == TeacherConfig(model="m").max_reply_bytes == 256 * 1024
    with pytest.raises(ValidationError, match="greater than or equal to 4096"):
        TeacherEndpoint.model_validate({"url": "http://t/v1", "model": "m", "maxReplyBytes": 100})


def test_the_operator_passes_max_reply_bytes_to_the_pod() -> None:
    endpoint = {"url": "http://teacher:8000/v1", "model": "m", "maxReplyBytes": 8192}
    run = SyntheticDataRun.model_validate(
        {
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"taxonomyRef": {"name": "t"}, "teacher": {"endpoint": endpoint}},
        }
    )
    taxonomy = Taxonomy.model_validate(
        {
            "metadata": {"name": "t", "namespace": "ns"},
            "spec": {"source": {"git": {"url": "https://example.com/t.git"}}},
        }
    )
    config = build_generate_config(run, taxonomy, "a" * 40, "pvc://claim/out", OperatorSettings())
    assert config.teacher.max_reply_bytes == 8192
