"""One pod on the node agent: its network namespace, volumes, init containers, native sidecars
and containers as local processes, and the pod status a kubelet would report for them."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from labtune.devcluster.nodeagent_api import Json, NodeApi
from labtune.devcluster.nodeagent_exec import Launch, Mount
from labtune.devcluster.nodeagent_net import Bridge, PodNetwork
from labtune.devcluster.nodeagent_spec import EnvBuilder, VolumeBuilder, VolumeError, container_mounts, expand

log = logging.getLogger("labtune.nodeagent")
POLL_S = 0.2
MESSAGE_BYTES = 4096
FALLBACK_BYTES, FALLBACK_LINES = 2048, 80
DEFAULT_GRACE_S = 30
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The source tree labtune runs from (an editable install imports from it)."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class NodeContext:
    """What every pod runner shares."""

    api: NodeApi
    bridge: Bridge
    data_root: Path
    bin_dir: Path
    """The project environment's bin folder: first on every container's PATH."""
    ca_bundle: Path | None
    """Replaces the system CA bundle in containers (the host's plus extra CAs), when set."""

    @property
    def host_ip(self) -> str:
        return self.bridge.gateway


def environment_mounts(mounts: list[Mount]) -> list[Mount]:
    """The project's environment (its source tree, for the editable install, the venv and the base
    Python) mounted back read-only where a volume would hide it: a clone under /tmp would otherwise
    vanish under the pod's own /tmp."""
    paths = {PROJECT_ROOT, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    return [
        Mount(source=str(path), target=str(path), read_only=True)
        for path in sorted(paths)
        if any(path.is_relative_to(mount.target) for mount in mounts)
    ]


@dataclass
class Container:
    """A container's process and what its status reports."""

    spec: Json
    folder: Path
    sidecar: bool = False
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started: bool = False
    terminated: Json | None = None
    restarts: int = 0
    last_terminated: Json | None = None
    waiting: str = "ContainerCreating"

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def log(self) -> Path:
        return self.folder / "container.log"

    @property
    def termination_log(self) -> Path:
        return self.folder / "termination-log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.terminated is None

    def poll(self) -> bool:
        """Records the exit once the process ended; True when it just did."""
        if self.process is None or self.terminated is not None:
            return False
        code = self.process.poll()
        if code is None:
            return False
        exit_code = 128 - code if code < 0 else code  # killed by a signal: 128+n, as runtimes report
        self.terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": now(),
            "containerID": self.container_id,
        }
        if message := self._message(exit_code):
            self.terminated["message"] = message
        return True

    @property
    def container_id(self) -> str:
        return f"labtune://{self.folder.parent.parent.name}/{self.name}/{self.restarts}"

    def _message(self, exit_code: int) -> str:
        """The termination log, or for FallbackToLogsOnError after a failure the log's tail."""
        try:
            with self.termination_log.open("rb") as file:
                message = file.read(MESSAGE_BYTES).decode(errors="replace")
        except OSError:
            message = ""
        if message or exit_code == 0 or self.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return message
        with self.log.open("rb") as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - FALLBACK_BYTES))
            tail = file.read().decode(errors="replace")
        return "\n".join(tail.splitlines()[-FALLBACK_LINES:])

    def signal(self, signum: signal.Signals) -> None:
        if self.running and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def status(self) -> Json:
        state: Json
        if self.terminated is not None:
            state = {"terminated": self.terminated}
        elif self.process is not None:
            state = {"running": {"startedAt": self.started_at}}
        else:
            state = {"waiting": {"reason": self.waiting}}
        status: Json = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.running and self.started,
            "restartCount": self.restarts,
            "started": self.running and self.started,
            "state": state,
        }
        if self.process is not None:
            status["containerID"] = self.container_id
        if self.last_terminated is not None:
            status["lastState"] = {"terminated": self.last_terminated}
        return status


class PodRunner:
    """Runs one pod in a thread until its containers are done or it is deleted."""

    def __init__(self, context: NodeContext, pod: Json) -> None:
        self.context, self.pod = context, pod
        meta = pod["metadata"]
        self.key = meta["uid"].replace("-", "")[:10]
        self.folder = context.data_root / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
        spec = pod["spec"]
        self.init = [self._container(c, "init-") for c in spec.get("initContainers") or []]
        self.main = [self._container(c, "") for c in spec["containers"]]
        self.network: PodNetwork | None = None
        self.volumes = VolumeBuilder(context.api, pod, self.folder, context.data_root)
        self.phase = "Pending"
        self.start_time = now()
        self.message: str | None = None
        self._conditions: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._grace = float(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S))
        self._thread = threading.Thread(target=self._run, name=f"pod-{meta['name']}", daemon=True)

    def _container(self, spec: Json, prefix: str) -> Container:
        folder = self.folder / "containers" / f"{prefix}{spec['name']}"
        folder.mkdir(parents=True, exist_ok=True)
        return Container(spec, folder, sidecar=bool(prefix) and spec.get("restartPolicy") == "Always")

    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def container(self, name: str) -> Container | None:
        return next((c for c in [*self.init, *self.main] if c.name == name), None)

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float | None) -> bool:
        """Deletion: SIGTERM to every container, SIGKILL after the grace period; False when the
        pod was being stopped already."""
        if self._stop.is_set():
            return False
        if grace is not None:
            self._grace = grace
        self._stop.set()
        return True

    def join(self) -> None:
        self._thread.join()

    def remove(self) -> None:
        """Removes the pod's files, logs included (the pod object is gone)."""
        self.volumes.remove()
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- the pod's life --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._report()
            self.network = self.context.bridge.attach(self.key)
            volumes = self._volumes()
            if volumes is not None and self._run_init(volumes):
                self._run_main(volumes)
        except Exception as error:  # a bug or an API error must still end the pod visibly
            log.exception("pod %s failed in the node agent", self.name)
            self.phase, self.message = "Failed", f"node agent: {error}"
        finally:
            self._kill(self.init + self.main)
            if self.phase not in ("Succeeded", "Failed"):
                self.phase = "Failed"
            self._report()
            if self.network is not None:
                self.context.bridge.detach(self.network)
            self.volumes.remove()

    def _volumes(self) -> dict[str, Path] | None:
        """Builds the volumes, retrying while something they need is missing (as the kubelet does)."""
        while not self._stop.is_set():
            try:
                return self.volumes.build()
            except VolumeError as error:
                if self.message != str(error):
                    self.message = str(error)
                    self._report()
                self._stop.wait(2.0)
        return None

    def _run_init(self, volumes: dict[str, Path]) -> bool:
        """Init containers in order; sidecars are started (and probed) and keep running."""
        for container in self.init:
            if container.sidecar:
                self._launch(container, volumes)
                self._wait_started(container, volumes)
                continue
            while not self._stop.is_set():
                self._launch(container, volumes)
                self._wait_exit([container], volumes)
                assert container.terminated is not None
                if container.terminated["exitCode"] == 0 or self._stop.is_set():
                    break
                if self.pod["spec"].get("restartPolicy", "Always") == "Never":
                    self.phase = "Failed"
                    return False
                self._restart(container)
            if self._stop.is_set():
                return False
        return True

    def _run_main(self, volumes: dict[str, Path]) -> None:
        for container in self.main:
            self._launch(container, volumes)
        self.phase = "Running"
        self._report()
        self._wait_exit(self.main, volumes)
        codes = [c.terminated["exitCode"] for c in self.main if c.terminated is not None]
        self.phase = "Succeeded" if codes and not any(codes) and not self._stop.is_set() else "Failed"

    def _wait_exit(self, containers: list[Container], volumes: dict[str, Path]) -> None:
        """Until `containers` all exited (restarting per restartPolicy) or the pod is deleted."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while True:
            if self._stop.is_set():
                self._kill(containers)
                return
            changed = False
            for container in [*containers, *(c for c in self.init if c.sidecar)]:
                if not container.poll():
                    continue
                changed = True
                assert container.terminated is not None
                failed = container.terminated["exitCode"] != 0
                again = policy == "Always" or (policy == "OnFailure" and failed)
                if container.sidecar or (again and container in self.main):  # init: _run_init retries
                    self._restart(container)
                    self._launch(container, volumes)
            if changed:
                self._report()
            if all(c.terminated is not None for c in containers):
                return
            time.sleep(POLL_S)

    def _restart(self, container: Container) -> None:
        container.last_terminated, container.terminated = container.terminated, None
        container.restarts += 1
        container.process = None

    def _wait_started(self, container: Container, volumes: dict[str, Path]) -> None:
        """Until the sidecar's startupProbe passes (httpGet or tcpSocket; others count as passed)."""
        probe = container.spec.get("startupProbe") or {}
        time.sleep(float(probe.get("initialDelaySeconds", 0)))
        while not self._stop.is_set() and not self._probe(probe):
            if container.poll():
                self._restart(container)
                self._launch(container, volumes)
            time.sleep(float(probe.get("periodSeconds", 1)))
        container.started = True
        self._report()

    def _probe(self, probe: Json) -> bool:
        assert self.network is not None
        target = probe.get("httpGet") or probe.get("tcpSocket")
        if target is None:
            return True
        try:
            if "httpGet" in probe:
                connection = http.client.HTTPConnection(self.network.ip, int(target["port"]), timeout=2)
                connection.request("GET", target.get("path", "/"))
                return 200 <= connection.getresponse().status < 400
            with socket.create_connection((self.network.ip, int(target["port"])), timeout=2):
                return True
        except OSError:
            return False

    def _kill(self, containers: list[Container]) -> None:
        """Stops running containers: SIGTERM, SIGKILL after the grace period; mains before sidecars."""
        mains = [c for c in containers if not c.sidecar]
        sidecars = [c for c in self.init if c.sidecar]
        for group in (mains, sidecars):
            running = [c for c in group if c.running]
            for container in running:
                container.signal(signal.SIGTERM)
            deadline = time.monotonic() + self._grace
            while any(c.running for c in running) and time.monotonic() < deadline:
                time.sleep(POLL_S)
                for container in running:
                    container.poll()
            for container in running:
                container.signal(signal.SIGKILL)
                if container.process is not None:
                    container.process.wait()
                container.poll()

    # --- processes -------------------------------------------------------------------------------

    def _launch(self, container: Container, volumes: dict[str, Path]) -> None:
        assert self.network is not None
        spec = container.spec
        self.pod.setdefault("status", {}).update(self._ips())  # status.podIP for the downward API
        env = EnvBuilder(self.context.api, self.pod, self.context.bin_dir).build(spec)
        argv = [expand(part, env) for part in [*(spec.get("command") or []), *(spec.get("args") or [])]]
        if not argv:
            raise VolumeError(f"container {container.name} has no command (images are not run here)")
        container.termination_log.write_bytes(b"")
        mounts = [
            *container_mounts(spec, volumes),
            Mount(
                source=str(container.termination_log),
                target=spec.get("terminationMessagePath", "/dev/termination-log"),
            ),
            Mount(source=str(self._hosts_file()), target="/etc/hosts", read_only=True),
        ]
        if self.context.ca_bundle is not None:
            mounts.append(Mount(source=str(self.context.ca_bundle), target=SYSTEM_CA_BUNDLE, read_only=True))
        mounts += environment_mounts(mounts)
        dev = container.folder / "dev"
        dev.mkdir(exist_ok=True)
        security = spec.get("securityContext") or {}
        launch = Launch(
            netns=self.network.path,
            hostname=env["HOSTNAME"],
            dev_dir=str(dev),
            mounts=mounts,
            read_only_root=bool(security.get("readOnlyRootFilesystem")),
            working_dir=spec.get("workingDir"),
            argv=argv,
            env=env,
        )
        launch_file = container.folder / "launch.json"
        launch_file.write_text(launch.model_dump_json(indent=1))
        command = [sys.executable, "-m", "labtune.devcluster.nodeagent_exec", str(launch_file)]
        with container.log.open("ab") as out:
            container.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=container.folder,
            )  # fmt: skip
        container.started_at, container.started = now(), not container.sidecar
        log.info("pod %s: started %s (pid %d)", self.name, container.name, container.process.pid)
        self._report()

    def _hosts_file(self) -> Path:
        assert self.network is not None
        path = self.folder / "hosts"
        hostname = self.pod["spec"].get("hostname") or self.pod["metadata"]["name"]
        path.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{self.network.ip}\t{hostname}\n")
        return path

    # --- status ----------------------------------------------------------------------------------

    def _ips(self) -> Json:
        if self.network is None:
            return {}
        return {"podIP": self.network.ip, "podIPs": [{"ip": self.network.ip}]}

    def _condition(self, kind: str, ok: bool, reason: str | None = None) -> Json:
        value = "True" if ok else "False"
        previous = self._conditions.get(kind)
        if previous is None or previous[0] != value:
            self._conditions[kind] = (value, now())
        condition: Json = {"type": kind, "status": value, "lastTransitionTime": self._conditions[kind][1]}
        if reason and not ok:
            condition["reason"] = reason
        return condition

    def _report(self) -> None:
        initialized = all(c.terminated is not None or (c.sidecar and c.started) for c in self.init)
        ready = self.phase == "Running" and all(c.running and c.started for c in self.main)
        terminal = self.phase in ("Succeeded", "Failed")
        for container in self.main:
            container.waiting = "ContainerCreating" if initialized else "PodInitializing"
        scheduled = [
            c for c in (self.pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"
        ]
        status: Json = {
            "phase": self.phase,
            "hostIP": self.context.host_ip,
            "hostIPs": [{"ip": self.context.host_ip}],
            "startTime": self.start_time,
            "conditions": [
                *scheduled,
                self._condition("PodReadyToStartContainers", self.network is not None and not terminal),
                self._condition("Initialized", initialized, "ContainersNotInitialized"),
                self._condition("ContainersReady", ready, "ContainersNotReady"),
                self._condition("Ready", ready, "ContainersNotReady"),
            ],
            "containerStatuses": [c.status() for c in self.main],
            **self._ips(),
        }
        if self.init:
            status["initContainerStatuses"] = [c.status() for c in self.init]
        if self.message:
            status["message"] = self.message
        self.context.api.patch_pod_status(self.pod, status)
