"""Child processes of the dev cluster (control plane, node): each in its own process group, logging to
a file, killed when the thread that started it dies, and waited on until a health URL answers."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

KEEP_LOGS_ENV = "LABTUNE_KEEP_CONTROLPLANE_LOGS"
STOP_TIMEOUT_S = 15.0
POLL_S = 0.2
_LOG_TAIL_LINES = 40


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


def launch(name: str, args: list[str], log: Path, cwd: Path, env: Mapping[str, str] | None = None) -> Process:
    """Starts `args` in a new session, output appended to `log`, SIGKILLed if this thread dies."""
    with log.open("ab") as out:
        popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    return Process(name, popen, log)


def wait_healthy(
    process: Process,
    check: Callable[[], str | None],
    timeout: float,
    error: type[Exception],
    what: str = "",
) -> None:
    """Polls `check` (None when healthy, else why not) until healthy; raises `error` with the log's tail
    when the process exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while (returncode := process.popen.poll()) is None:
        last = check()
        if last is None:
            return
        if time.monotonic() > deadline:
            raise error(
                f"{process.name} was not healthy after {timeout:.0f}s ({what}{last}){log_tail(process.log)}"
            )
        time.sleep(POLL_S)
    raise error(f"{process.name} exited with code {returncode}{log_tail(process.log)}")


def run_step(
    step: str, argv: list[str], log: Path, error: type[Exception], env: Mapping[str, str] | None = None
) -> str:
    """Runs one step to completion with its output in `log` and returns that output; a failure raises
    `error` naming the step, with the output's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        result = subprocess.run(
            argv, env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    text = log.read_text(errors="replace")
    if result.returncode != 0:
        tail = "\n".join(text.splitlines()[-25:])
        raise error(f"{step} failed (exit {result.returncode}; full output in {log}):\n{tail}")
    return text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def probe(url: str, context: ssl.SSLContext | None) -> str | None:
    """None when `url` answers 200, otherwise why not (for the timeout message)."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=context):
            return None
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}: {error.read().decode(errors='replace')[-2000:]}"
    except (OSError, http.client.HTTPException) as error:  # not up yet, or restarting
        return str(error)


def log_tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        return ""
    return f"; last lines of {log} (set {KEEP_LOGS_ENV}=1 to keep the logs):\n" + "\n".join(lines)


def terminate(popen: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process group, SIGKILL after `timeout` seconds; reaps the process."""
    if popen.poll() is not None:
        return
    signal_group(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        signal_group(popen.pid, signal.SIGKILL)
        popen.wait()


def signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def die_with_parent() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook making the child get SIGKILL when the starting thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved before fork: the hook then only calls into libc, which is safe in a forked child.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, parent = 1, os.getpid()

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl: nobody will stop this child
            os._exit(1)

    return hook
