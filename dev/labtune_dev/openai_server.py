"""A small scripted OpenAI-compatible HTTP server on loopback (chat and completions), for the
teacher client's tests, the judge's, and the sharded generation benchmark (an endpoint with
spare capacity: a thread per request): what it replies, which statuses, how slowly, and what it
was asked."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class TlsFiles(Protocol):
    """A certificate and its key (the generator tests' make_tls makes them)."""

    @property
    def cert(self) -> Any: ...

    @property
    def key(self) -> Any: ...


class Script:
    """What the server answers: `reply` to each prompt (`re: <prompt>` by default), `status` per
    prompt (default 200), a delay, and what it saw."""

    def __init__(self, reply: Callable[[str], str] | None = None) -> None:
        self.reply = reply or (lambda prompt: f"re: {prompt}")
        self.status: dict[str, int] = {}
        self.delay = 0.0
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["prompt"] if "prompt" in body else body["messages"][-1]["content"]
            with script.lock:
                script.calls.append((self.path, body, self.headers.get("Authorization")))
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            time.sleep(script.delay)
            with script.lock:
                script.in_flight -= 1
            status = script.status.get(prompt, 200)
            usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            text = script.reply(prompt)
            choice = (
                {"index": 0, "text": text, "finish_reason": "stop"}
                if "prompt" in body
                else {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            )
            reply = (
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [choice],
                    "usage": usage,
                }
                if status == 200
                else {"error": {"message": "nope", "type": "invalid_request_error"}}
            )
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def serve(
    tls: TlsFiles | None = None, reply: Callable[[str], str] | None = None
) -> Iterator[tuple[str, Script]]:
    """The server on a loopback port, with its base URL (`…/v1`)."""
    script = Script(reply)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}/v1", script
    httpd.shutdown()
