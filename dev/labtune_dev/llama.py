"""llama.cpp's OpenAI-compatible server (llama-cpp-python) serving a GGUF on loopback: the teacher
endpoint of the demo, the generator's integration tests and its benchmark."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_SECONDS = 300.0
"""Loading a small model takes seconds; a busy 2-core machine can take minutes."""


class ServerError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log's tail."""


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _command(model: Path, alias: str, host: str, port: int, threads: int, context: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        alias,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(context),
        "--n_threads",
        str(threads),
    ]


def _wait_ready(server: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise ServerError(f"llama.cpp server exited with {server.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ServerError(f"llama.cpp server not ready in {timeout:.0f}s: {_tail(log)}") from None
            time.sleep(0.5)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


@contextmanager
def llama_server(
    model: Path,
    log: Path,
    *,
    alias: str = "smollm2",
    host: str = "127.0.0.1",
    port: int = 0,
    threads: int = 2,
    context: int = 2048,
    timeout: float = START_SECONDS,
) -> Iterator[str]:
    """Runs the server until the block ends; yields its OpenAI base URL (`http://host:port/v1`)."""
    port = port or _free_port(host)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        server = subprocess.Popen(
            _command(model, alias, host, port, threads, context), stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://{host}:{port}/v1"
    try:
        _wait_ready(server, url, log, timeout)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
