"""`kubectl logs` for the node agent: the kubelet's `/containerLogs/<namespace>/<pod>/<container>`
endpoint over https on the node's address, which the API server proxies to (it does not verify a
kubelet's serving certificate unless given --kubelet-certificate-authority, and the dev control
plane is not). Supports `tailLines`, `limitBytes` and `follow`; no authentication, so it listens
only on the pods' bridge address."""

from __future__ import annotations

import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from labtune.devcluster.gitserver import server_tls

FOLLOW_POLL_S = 0.5

LogSource = Callable[[str, str, str], "tuple[Path, Callable[[], bool]] | None"]
"""(namespace, pod, container) -> (log file, whether the container still runs), or None."""


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    kept = data.splitlines(keepends=True)[-lines:]
    return b"".join(kept)


def _handler(find: LogSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            found = find(*parts[1:4]) if len(parts) == 4 and parts[0] == "containerLogs" else None
            if found is None:
                self.send_error(404, "no such container on this node")
                return
            log, running = found
            query = dict(urllib.parse.parse_qsl(url.query))
            data = log.read_bytes() if log.exists() else b""
            if "tailLines" in query:
                data = _tail(data, int(query["tailLines"]))
            if "limitBytes" in query:
                data = data[: int(query["limitBytes"])]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(data)
            if query.get("follow") == "true":
                self._follow(log, running)

        def _follow(self, log: Path, running: Callable[[], bool]) -> None:
            with log.open("rb") as file:
                file.seek(0, 2)
                while True:
                    chunk = file.read()
                    if chunk:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    elif not running():
                        return
                    else:
                        time.sleep(FOLLOW_POLL_S)

    return Handler


class LogServer:
    """Serves container logs on `host` (a free port) until stop()."""

    def __init__(self, host: str, tls_dir: Path, find: LogSource) -> None:
        _, serving = server_tls(tls_dir, host)
        self._httpd = ThreadingHTTPServer((host, 0), _handler(find))
        self._httpd.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(serving.cert, serving.key)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port: int = self._httpd.server_address[1]

    def start(self) -> None:
        threading.Thread(target=self._httpd.serve_forever, name="nodeagent-logs", daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
