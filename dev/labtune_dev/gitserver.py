"""An https git server for the dev cluster: git's smart HTTP protocol (`git http-backend` as CGI)
behind TLS with a private CA and basic auth, serving the bare repositories of one folder.

The Taxonomy kind accepts https and ssh URLs only; this is the https one for the demo and tests."""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from labtune_dev.certs import CertKey, _builder, _key_usage, _name, _write


@dataclass(frozen=True)
class GitServer:
    url: str
    """Base URL; repositories are served at <url>/<name>.git."""
    root: Path
    """Folder of the bare repositories."""
    ca: Path
    """PEM CA that signed the server's certificate."""
    username: str
    password: str

    def credentials(self, folder: Path) -> Path:
        """`folder` holding a basic-auth Secret's keys as files (`username`, `password`), as a pod
        has them mounted."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "username").write_text(self.username)
        (folder / "password").write_text(self.password)
        return folder


def server_tls(directory: Path, host: str) -> tuple[CertKey, CertKey]:
    """A private CA and a serving certificate for `host` (an IP address or a DNS name)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("labtune-git-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    try:
        name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        name = x509.DNSName(host)
    cert = (
        _builder(_name(host), ca_name, key)
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return _write(directory, "ca", ca_cert, ca_key), _write(directory, "server", cert, key)


def _handler(root: Path, credentials: str) -> type[BaseHTTPRequestHandler]:
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


@contextmanager
def git_server(
    root: Path, tls_dir: Path, *, host: str = "127.0.0.1", port: int = 0, username: str = "labtune",
    password: str = "labtune-demo",
) -> Iterator[GitServer]:  # fmt: skip
    """Serves the bare repositories in `root` over https until the block ends."""
    ca, serving = server_tls(tls_dir, host)
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    httpd = ThreadingHTTPServer((host, port), _handler(root, credentials))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(serving.cert, serving.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, name="git-server", daemon=True).start()
    try:
        yield GitServer(f"https://{host}:{httpd.server_address[1]}", root, ca.cert, username, password)
    finally:
        httpd.shutdown()
        httpd.server_close()
