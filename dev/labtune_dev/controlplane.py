"""A real local Kubernetes control plane: etcd, kube-apiserver and, on demand,
kube-controller-manager and kube-scheduler, as child processes listening on loopback only.

`ControlPlane` runs one inside the calling process (tests); `up`/`down`/`running` run one
detached from the terminal (`labtune-dev controlplane up`), with its state in a state folder.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel

from labtune_dev import certs
from labtune_dev.binaries import cache_root, ensure_binaries, progress
from labtune_dev.processes import (
    KEEP_LOGS_ENV,
    POLL_S,
    STOP_TIMEOUT_S,
    Process,
    free_port,
    launch,
    log_tail,
    probe,
    signal_group,
    terminate,
    wait_healthy,
)

if TYPE_CHECKING:  # kubernetes' client takes a while to import; only a node needs it
    from labtune_dev.node import Node, NodeSettings

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Cloud controllers have no cloud to talk to; the rest of the defaults ("*") stay on.
CONTROLLERS = "*,-cloud-node-lifecycle-controller,-node-route-controller,-service-lb-controller"
_DIR_PREFIX = "labtune-controlplane-"
_OWNER_FILE = "owner.pid"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or reached."""


class ControlPlane:
    """etcd + kube-apiserver (+ controller-manager and scheduler) in a private temp folder.

    Each process logs to `logs_dir`; stop() deletes the folder, logs included, unless
    LABTUNE_KEEP_CONTROLPLANE_LOGS is set (they move to $LABTUNE_CACHE/logs/<folder name>).
    Every process runs in its own process group and, on Linux, is killed when the thread that
    started it exits, so a killed test run leaves no process behind (its folder goes at the next
    start). Start and stop from the same long-lived (usually the main) thread.
    """

    def __init__(
        self, binaries: Path | None = None, *, address: str = "127.0.0.1", startup_timeout: float = 120.0
    ) -> None:
        """`address`: where the apiserver listens; a node's address (not loopback) lets pods reach it
        through the `kubernetes` Service and kubelets register."""
        self._binaries = binaries
        self.address = address
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._pki: certs.ControlPlaneCerts | None = None
        self._server: str | None = None
        self._processes: list[Process] = []

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise ControlPlaneError("the control plane is not started; call start() first")
        return self._dir

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def kubeconfig(self) -> Path:
        """An admin (system:masters) kubeconfig with the certificates embedded."""
        return self.directory / "admin.kubeconfig"

    @property
    def server(self) -> str:
        if self._server is None:
            raise ControlPlaneError("the control plane is not started; call start() first")
        return self._server

    @property
    def pids(self) -> dict[str, int]:
        return {process.name: process.popen.pid for process in self._processes}

    @property
    def controllers_running(self) -> bool:
        return any(process.name == "kube-scheduler" for process in self._processes)

    def start(self) -> None:
        """Starts etcd and kube-apiserver and waits until the apiserver's /readyz is ok."""
        if self._dir is not None:
            raise ControlPlaneError(f"the control plane is already started in {self._dir}")
        binaries = (self._binaries or ensure_binaries()).absolute()  # the processes run elsewhere
        started = time.monotonic()
        _remove_abandoned_dirs()
        self._dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        try:
            (self._dir / _OWNER_FILE).write_text(str(os.getpid()))
            self.logs_dir.mkdir()
            self._pki = certs.generate(self._dir / "pki", server_ips=[self.address])
            etcd_url = self._start_etcd(binaries)
            self._start_apiserver(binaries, etcd_url)
        except BaseException:
            self.stop()
            raise
        progress(f"kube-apiserver ready at {self._server} in {time.monotonic() - started:.1f}s")

    def start_controllers(self) -> None:
        """Starts kube-controller-manager and kube-scheduler (once) and waits for their /healthz."""
        if self.controllers_running:
            return
        binaries = (self._binaries or ensure_binaries()).absolute()
        started, count = time.monotonic(), len(self._processes)
        try:
            self._start_controller_manager(binaries)
            self._start_scheduler(binaries)
        except BaseException:
            # Only the controllers go: the apiserver stays usable (and stop() still owns it).
            for process in reversed(self._processes[count:]):
                terminate(process.popen)
            del self._processes[count:]
            raise
        progress(f"controller-manager and scheduler ready in {time.monotonic() - started:.1f}s")

    def exited(self) -> list[str]:
        """The names of the processes that have exited (they are not expected to)."""
        return [process.name for process in self._processes if process.popen.poll() is not None]

    def stop(self) -> None:
        """Stops every process (SIGTERM, then SIGKILL) and removes the temp folder. Idempotent."""
        for process in reversed(self._processes):  # dependents first, etcd last
            terminate(process.popen)
        self._processes.clear()
        if self._dir is not None:
            self._keep_logs(self._dir / "logs")
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = self._pki = self._server = None

    @property
    def pki(self) -> certs.ControlPlaneCerts:
        """The cluster's CA and certificates (a node issues its own from the CA)."""
        return self._certs

    @property
    def _certs(self) -> certs.ControlPlaneCerts:
        if self._pki is None:
            raise ControlPlaneError("the control plane is not started; call start() first")
        return self._pki

    def _start_etcd(self, binaries: Path) -> str:
        client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        process = self._launch(
            "etcd",
            [
                str(binaries / "etcd"),
                "--name=default",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                # The data is thrown away on stop; fsync only slows every write down.
                "--unsafe-no-fsync=true",
            ],
        )
        self._wait_healthy(process, f"{client}/health", None)
        return client

    def _start_apiserver(self, binaries: Path, etcd_url: str) -> None:
        pki, port = self._certs, free_port()
        process = self._launch(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--advertise-address={self.address}",
                f"--bind-address={self.address}",
                f"--secure-port={port}",
                f"--kubelet-client-certificate={pki.kubelet_client.cert}",
                f"--kubelet-client-key={pki.kubelet_client.key}",
                f"--kubelet-certificate-authority={pki.ca.cert}",
                # The node registers under its name, which does not resolve: logs and exec go to its IP.
                "--kubelet-preferred-address-types=InternalIP",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca.cert}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                # The `kubernetes` Service cannot point at a loopback address: leave it without
                # endpoints rather than log a failed reconcile every 10s.
                f"--endpoint-reconciler-type={'none' if self.address == '127.0.0.1' else 'lease'}",
            ],
        )
        server = f"https://{self.address}:{port}"
        _write_kubeconfig(self.kubeconfig, server, pki.ca.cert, pki.admin)
        context = ssl.create_default_context(cafile=pki.ca.cert)
        context.load_cert_chain(pki.admin.cert, pki.admin.key)
        self._wait_healthy(process, f"{server}/readyz", context)
        self._server = server

    def _start_controller_manager(self, binaries: Path) -> None:
        pki, port = self._certs, free_port()
        kubeconfig = self.directory / "controller-manager.kubeconfig"
        _write_kubeconfig(kubeconfig, self.server, pki.ca.cert, pki.controller_manager)
        process = self._launch(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                *_component_flags(kubeconfig, port),
                f"--controllers={CONTROLLERS}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
            ],
        )
        self._wait_healthy(process, f"https://127.0.0.1:{port}/healthz", _insecure_context())

    def _start_scheduler(self, binaries: Path) -> None:
        pki, port = self._certs, free_port()
        kubeconfig = self.directory / "scheduler.kubeconfig"
        _write_kubeconfig(kubeconfig, self.server, pki.ca.cert, pki.scheduler)
        process = self._launch(
            "kube-scheduler", [str(binaries / "kube-scheduler"), *_component_flags(kubeconfig, port)]
        )
        self._wait_healthy(process, f"https://127.0.0.1:{port}/healthz", _insecure_context())

    def _launch(self, name: str, args: list[str]) -> Process:
        process = launch(name, args, self.logs_dir / f"{name}.log", self.directory)
        self._processes.append(process)
        return process

    def _wait_healthy(self, process: Process, url: str, context: ssl.SSLContext | None) -> None:
        wait_healthy(
            process, lambda: probe(url, context), self._startup_timeout, ControlPlaneError, f"{url}: "
        )

    def _keep_logs(self, logs: Path) -> None:
        if os.environ.get(KEEP_LOGS_ENV, "").lower() in ("", "0", "false", "no") or not logs.is_dir():
            return
        kept = cache_root() / "logs" / logs.parent.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(logs, kept)
        progress(f"kept the control plane logs in {kept} ({KEEP_LOGS_ENV} is set)")


def _remove_abandoned_dirs() -> None:
    """Removes the temp folders of control planes whose process died without stop() (SIGKILL).

    Their processes are gone already (killed with their parent); etcd's data is 100+ MB.
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            owner = int((folder / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # being created right now, or not a control plane's
        if not _is_process(owner, ""):
            shutil.rmtree(folder, ignore_errors=True)


def _component_flags(kubeconfig: Path, port: int) -> list[str]:
    """Flags shared by controller-manager and scheduler: identity, loopback serving, no election.

    No authentication/authorization kubeconfigs: /healthz is served anonymously anyway, and
    delegated authentication would wait for a front-proxy CA this control plane does not have.
    """
    return [
        f"--kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",  # a single instance: electing only delays the start
    ]


def _write_kubeconfig(path: Path, server: str, ca: Path, client: certs.CertKey) -> None:
    """A self-contained kubeconfig (certificates embedded), so copies of it keep working."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "labtune-dev", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {
                "name": "labtune-dev",
                "user": {"client-certificate-data": b64(client.cert), "client-key-data": b64(client.key)},
            }
        ],
        "contexts": [{"name": "labtune-dev", "context": {"cluster": "labtune-dev", "user": "labtune-dev"}}],
        "current-context": "labtune-dev",
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _insecure_context() -> ssl.SSLContext:
    """controller-manager and scheduler serve /healthz with a self-signed, in-memory cert."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --- Detached control plane (`labtune-dev controlplane up/env/down`) ---------------------------


class DetachedState(BaseModel):
    """What `serve` publishes in the state folder once the control plane is ready."""

    pid: int  # the process running the ControlPlane (`serve`)
    directory: Path
    kubeconfig: Path
    server: str
    controllers: bool
    pids: dict[str, int]
    node: str | None = None
    """The node's name, when the cluster has one (`up --node`)."""
    node_directory: Path | None = None
    """Its folder: containerd's socket, logs, pod logs."""
    node_address: str | None = None
    """Its IP, where pods reach the host."""


class _Stopped(BaseException):
    """Raised in `serve` by SIGTERM/SIGINT/SIGHUP."""


_STATE_FILE = "state.json"
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def default_state_dir() -> Path:
    return cache_root() / "run" / "controlplane"


def export_line(state: DetachedState) -> str:
    return f"export KUBECONFIG={shlex.quote(str(state.kubeconfig))}"


def running(state_dir: Path) -> DetachedState | None:
    """The state of the detached control plane, or None when none is running."""
    state = _read_state(state_dir)
    return state if state is not None and _is_process(state.pid, str(state_dir)) else None


def up(
    state_dir: Path, *, with_controllers: bool, node: NodeSettings | None = None, timeout: float = 900.0
) -> tuple[DetachedState, bool]:
    """Starts a detached control plane unless one runs; returns its state and whether it started.

    The control plane runs in a new session (`serve`), so it outlives this process and the
    terminal; this waits (builds included) until it is ready or has failed.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    with _state_lock(state_dir):
        if (state := running(state_dir)) is not None:
            return state, False
        _clean_up(state_dir)
        binaries = ensure_binaries()
        log = state_dir / "serve.log"
        command = [sys.executable, "-m", "labtune_dev.dev_cli", "controlplane", "serve"]
        command += ["--state-dir", str(state_dir), "--binaries", str(binaries)]
        command.append("--with-controllers" if with_controllers else "--no-controllers")
        if node is not None:
            command += ["--node", node.model_dump_json()]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            return _wait_published(popen, state_dir, log, timeout), True
        except BaseException:
            # serve stops its processes on SIGTERM; give it the time to stop all four.
            terminate(popen, timeout=4 * STOP_TIMEOUT_S)
            raise


def down(state_dir: Path, *, timeout: float = 60.0) -> bool:
    """Stops the detached control plane and removes its files; False when there was none."""
    with _state_lock(state_dir):
        state = _read_state(state_dir)
        if state is None:
            return False
        if _is_process(state.pid, str(state_dir)):
            os.kill(state.pid, signal.SIGTERM)
            if not _wait_gone(state.pid, str(state_dir), timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state.pid, signal.SIGKILL)
        _clean_up(state_dir)
        return True


def serve(
    state_dir: Path, binaries: Path, *, with_controllers: bool, node: NodeSettings | None = None
) -> None:
    """Runs a control plane (and a node on it) until a signal or one of its processes exits,
    publishing its state."""
    from labtune_dev.node import Node, ensure_bridge, remove_bridge

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    for signum in _SIGNALS:
        signal.signal(signum, stop)
    if node is not None:
        ensure_bridge(node)  # the apiserver binds to the node's address
    plane = ControlPlane(binaries, address=node.address if node is not None else "127.0.0.1")
    worker: Node | None = None
    try:
        plane.start()
        if with_controllers or node is not None:
            plane.start_controllers()  # a node needs them: its not-ready taint, the Job controller
        if node is not None:
            worker = Node(node, plane.server, plane.pki, plane.kubeconfig)
            worker.start()
        _publish(state_dir, plane, worker)
        while not (exited := plane.exited() + (worker.exited() if worker else [])):
            time.sleep(1.0)
        progress(f"{', '.join(exited)} exited unexpectedly; stopping the cluster")
    except _Stopped:
        progress("stopping the cluster")
    finally:
        for signum in _SIGNALS:  # a second signal must not interrupt the clean-up
            signal.signal(signum, signal.SIG_IGN)
        if worker is not None:
            worker.stop()
        plane.stop()
        if node is not None:
            remove_bridge(node)
        _remove_state(state_dir)


def _publish(state_dir: Path, plane: ControlPlane, node: Node | None) -> None:
    kubeconfig = state_dir / "kubeconfig"
    kubeconfig.touch(mode=0o600)
    shutil.copyfile(plane.kubeconfig, kubeconfig)
    state = DetachedState(
        pid=os.getpid(),
        directory=plane.directory,
        kubeconfig=kubeconfig,
        server=plane.server,
        controllers=plane.controllers_running,
        pids=plane.pids,
        node=node.name if node is not None else None,
        node_directory=node.directory if node is not None else None,
        node_address=node.settings.address if node is not None else None,
    )
    partial = state_dir / f"{_STATE_FILE}.tmp"
    partial.write_text(state.model_dump_json(indent=2))
    partial.replace(state_dir / _STATE_FILE)  # atomic: readers never see half a file


def _wait_published(
    popen: subprocess.Popen[bytes], state_dir: Path, log: Path, timeout: float
) -> DetachedState:
    deadline = time.monotonic() + timeout
    while (returncode := popen.poll()) is None:
        state = _read_state(state_dir)
        if state is not None and state.pid == popen.pid:
            return state
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"the control plane was not ready after {timeout:.0f}s{log_tail(log)}")
        time.sleep(POLL_S)
    raise ControlPlaneError(f"the control plane failed to start (exit code {returncode}){log_tail(log)}")


def _read_state(state_dir: Path) -> DetachedState | None:
    try:
        return DetachedState.model_validate_json((state_dir / _STATE_FILE).read_text())
    except FileNotFoundError:
        return None


def _clean_up(state_dir: Path) -> None:
    """Removes what a dead `serve` left behind (on Linux its processes died with it already)."""
    state = _read_state(state_dir)
    if state is not None:
        for pid in state.pids.values():
            if _is_process(pid, str(state.directory)):
                signal_group(pid, signal.SIGKILL)
        shutil.rmtree(state.directory, ignore_errors=True)
    _remove_state(state_dir)


def _remove_state(state_dir: Path) -> None:
    for name in (_STATE_FILE, "kubeconfig"):
        (state_dir / name).unlink(missing_ok=True)


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    """Serialises up/down, so two concurrent `up`s start one control plane."""
    with (state_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _is_process(pid: int, marker: str) -> bool:
    """Whether `pid` is a live (not zombie) process whose command line contains `marker`.

    The marker guards against a recycled pid in a stale state file; without /proc (macOS) a live
    pid is trusted.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True
    try:
        zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        return not zombie and marker in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False  # exited meanwhile


def _wait_gone(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_process(pid, marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True
