"""The dev cluster's node agent: a stand-in kubelet with no container runtime.

It registers a Ready Node (CPU, memory and `nvidia.com/gpu` capacity: the GPUs are a number on the
Node, not devices; pods that ask for them run on the CPU), renews the Node's Lease, watches the
pods the scheduler binds to it and runs each as local processes in the project's environment
(`nodeagent_pod`): a network namespace with its own IP per pod, the pod's volumes bind-mounted
where its containers expect them, and pod status reported like a kubelet's. Needs Linux and root.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field

from labtune.devcluster.nodeagent_api import Json, NodeApi
from labtune.devcluster.nodeagent_logs import LogServer
from labtune.devcluster.nodeagent_net import Bridge
from labtune.devcluster.nodeagent_pod import SYSTEM_CA_BUNDLE, NodeContext, PodRunner, now

log = logging.getLogger("labtune.nodeagent")
LEASE_SECONDS = 40
RENEW_SECONDS = 10
STATUS_SECONDS = 30
WATCH_SECONDS = 60
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
LOST = "the node agent restarted and lost this pod's processes"


class NodeAgentError(RuntimeError):
    """The node agent cannot run here (not root, no iproute2, not Linux)."""


class NodeAgentSettings(BaseModel):
    """How the node presents itself and where it keeps pod files."""

    kubeconfig: Path
    node_name: str = "labtune-dev-node"
    data_root: Path
    """Pod folders (volumes, logs) and claims without a host-path volume."""
    gpus: int = Field(default=0, ge=0)
    """nvidia.com/gpu capacity to advertise (not real devices)."""
    gpu_product: str = "labtune-fake-gpu"
    cpu: str = Field(default_factory=lambda: str(os.cpu_count() or 1))
    memory: str = Field(default_factory=lambda: _memory())
    max_pods: int = 32
    bridge: str = "labtune0"
    pod_cidr: str = "10.244.0.0/24"
    extra_ca: Path | None = None
    """A PEM CA that containers trust besides the host's CAs (as an image with it baked in)."""


def _memory() -> str:
    with open("/proc/meminfo") as meminfo:
        kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return f"{kib}Ki"


def _was_running(status: Json) -> bool:
    return any("running" in (c.get("state") or {}) for c in status.get("containerStatuses") or [])


def check_host() -> None:
    """Fails with a clear message where pods cannot get namespaces and bind mounts."""
    if not sys.platform.startswith("linux"):
        raise NodeAgentError("the node agent needs Linux (mount and network namespaces)")
    if os.geteuid() != 0:
        raise NodeAgentError(
            "the node agent needs root: it creates a network namespace per pod and bind-mounts "
            "volumes in a mount namespace per container (run it with sudo)"
        )
    if shutil.which("ip") is None:
        raise NodeAgentError("the node agent needs iproute2's `ip` (apt-get install iproute2)")


class NodeAgent:
    """Registers the Node and runs the pods bound to it until stop()."""

    def __init__(self, settings: NodeAgentSettings) -> None:
        check_host()
        self.settings = settings
        self._client = config.new_client_from_config(config_file=str(settings.kubeconfig))  # type: ignore[no-untyped-call]
        self.api = NodeApi(self._client)
        self.bridge = Bridge(settings.bridge, settings.pod_cidr)
        self.runners: dict[str, PodRunner] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.settings.node_name

    def start(self) -> None:
        self.settings.data_root.mkdir(parents=True, exist_ok=True)
        self.bridge.ensure()
        self.bridge.sweep()
        self.logs = LogServer(self.bridge.gateway, self.settings.data_root / "tls", self._log_of)
        self.logs.start()
        context = NodeContext(
            api=self.api,
            bridge=self.bridge,
            data_root=self.settings.data_root,
            bin_dir=Path(sys.executable).parent,
            ca_bundle=self._ca_bundle(),
        )
        self._context = context
        self.api.ensure_node(self._node())
        self._heartbeat()
        for target in (self._heartbeats, self._watch):
            thread = threading.Thread(target=target, name=f"nodeagent-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("node %s is Ready (%s pods' bridge %s)", self.name, self.settings.pod_cidr, self.bridge.name)

    def stop(self) -> None:
        """Stops every pod (their grace periods apply), then deletes the Node."""
        self._stopping.set()
        with self._lock:
            runners = list(self.runners.values())
        for runner in runners:
            runner.stop(None)
        for runner in runners:
            runner.join()
        self.api.delete_node(self.name)  # a dev node does not outlive its agent
        self.logs.stop()
        self.bridge.remove()
        self._client.close()

    def _ca_bundle(self) -> Path | None:
        if self.settings.extra_ca is None:
            return None
        bundle = self.settings.data_root / "ca-certificates.crt"
        system = Path(SYSTEM_CA_BUNDLE).read_bytes() if Path(SYSTEM_CA_BUNDLE).is_file() else b""
        bundle.write_bytes(system + b"\n" + self.settings.extra_ca.read_bytes())
        return bundle

    # --- the Node ---------------------------------------------------------------------------------

    def _node(self) -> Json:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), "amd64"),
            "labtune.io/node-agent": "true",
        }
        if self.settings.gpus:
            labels[GPU_PRODUCT_LABEL] = self.settings.gpu_product
        spec = {"podCIDR": self.settings.pod_cidr}
        return {"metadata": {"name": self.name, "labels": labels}, "spec": spec}

    def _node_status(self) -> Json:
        stamp = now()
        capacity = {
            "cpu": self.settings.cpu,
            "memory": self.settings.memory,
            "pods": str(self.settings.max_pods),
            "ephemeral-storage": f"{shutil.disk_usage(self.settings.data_root).total // 1024}Ki",
        }
        if self.settings.gpus:
            capacity[GPU_RESOURCE] = str(self.settings.gpus)
        healthy = [
            ("MemoryPressure", "KubeletHasSufficientMemory"),
            ("DiskPressure", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "KubeletHasSufficientPID"),
        ]
        conditions = [
            {"type": kind, "status": "False", "reason": reason, "lastHeartbeatTime": stamp}
            for kind, reason in healthy
        ]
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": stamp}
        conditions.append({**ready, "message": "labtune node agent is posting ready status"})
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            # No Hostname address: the API server would dial the node name, which nothing resolves.
            "addresses": [{"type": "InternalIP", "address": self.bridge.gateway}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.logs.port}},
            "nodeInfo": {
                "architecture": platform.machine(),
                "operatingSystem": "linux",
                "osImage": "labtune node agent (local processes, no container runtime)",
                "kernelVersion": platform.release(),
                "containerRuntimeVersion": "labtune://0",
                "kubeletVersion": "labtune-node-agent",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    def _heartbeat(self) -> None:
        self.api.patch_node_status(self.name, self._node_status())
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        self.api.renew_lease(self.name, stamp, LEASE_SECONDS)

    def _heartbeats(self) -> None:
        """Lease every RENEW_SECONDS (what the node lifecycle controller watches), status too."""
        while not self._stopping.wait(RENEW_SECONDS):
            try:
                self._heartbeat()
            except (ApiException, OSError) as error:  # the API server restarting: try again later
                log.warning("heartbeat failed: %s", error)

    # --- pods ---------------------------------------------------------------------------------------

    def _watch(self) -> None:
        """List, then watch from the list's resourceVersion; re-list when the watch ends or fails."""
        while not self._stopping.is_set():
            try:
                pods, version = self.api.pods(self.name)
                listed = {pod["metadata"]["uid"] for pod in pods}
                for pod in pods:
                    self._sync(pod, initial=True)
                self._forget(listed)
                for kind, pod in self.api.watch_pods(self.name, version, WATCH_SECONDS):
                    if self._stopping.is_set():
                        return
                    if kind == "DELETED":
                        self._gone(pod["metadata"]["uid"])
                    elif kind in ("ADDED", "MODIFIED"):
                        self._sync(pod, initial=False)
            except Exception as error:  # a broken stream or an API error: the watch must go on
                log.warning("pod watch failed (re-listing): %s", error)
                self._stopping.wait(1.0)

    def _sync(self, pod: Json, *, initial: bool) -> None:
        """Level-triggered: starts, stops or finishes the pod as its object says."""
        meta, status = pod["metadata"], pod.get("status") or {}
        uid = meta["uid"]
        with self._lock:
            runner = self.runners.get(uid)
            if runner is None and not self._stopping.is_set():
                terminal = status.get("phase") in ("Succeeded", "Failed")
                if meta.get("deletionTimestamp") and (terminal or not status.get("containerStatuses")):
                    self.api.delete_pod(pod)
                    return
                if terminal:
                    return
                if initial and _was_running(status):
                    lost = {"phase": "Failed", "reason": "NodeAgentRestarted", "message": LOST}
                    self.api.patch_pod_status(pod, lost)
                    return
                runner = self.runners[uid] = PodRunner(self._context, pod)
                runner.start()
        deleted = runner is not None and meta.get("deletionTimestamp")
        if deleted and runner is not None and runner.stop(meta.get("deletionGracePeriodSeconds")):
            threading.Thread(target=self._finish_deletion, args=(runner, pod), daemon=True).start()

    def _finish_deletion(self, runner: PodRunner, pod: Json) -> None:
        """Once the deleted pod's processes are gone, the kubelet's final delete (grace 0)."""
        runner.join()
        self.api.delete_pod(pod)

    def _gone(self, uid: str) -> None:
        with self._lock:
            runner = self.runners.pop(uid, None)
        if runner is not None:
            runner.stop(0)
            runner.join()
            runner.remove()

    def _log_of(self, namespace: str, pod: str, container: str) -> tuple[Path, Callable[[], bool]] | None:
        """A container's log file for `kubectl logs` (the newest pod of that name)."""
        with self._lock:
            runners = [r for r in self.runners.values() if r.name == f"{namespace}/{pod}"]
        found = runners[-1].container(container) if runners else None
        if found is None:
            return None
        return found.log, lambda: found.running

    def _forget(self, listed: set[str]) -> None:
        """Pods deleted while no watch was open."""
        with self._lock:
            gone = [uid for uid in self.runners if uid not in listed]
        for uid in gone:
            self._gone(uid)
