"""A real Kubernetes node on this machine: containerd (CRI, runc, overlayfs), kubelet, kube-proxy and
CoreDNS as child processes, joined to a `ControlPlane` that listens on the node's address.

The node's address is the first address of its pod bridge (a bridge of the project's own: kubelet
rejects loopback node IPs), so host services bound there (the demo's git server and teacher) are
reachable from pods, and the operator reaches pods at their IPs. CNI: Debian's bridge, host-local,
portmap and loopback plugins, with no masquerading (pods send nothing off the machine). CoreDNS serves
cluster.local on the node's address, which kubelet hands to pods as their nameserver. No GPU exists
here: `gpus` advertises `nvidia.com/gpu` as an extended resource on the Node's status (a number the
scheduler counts), and pods that ask for it run on the CPU.

Facts this relies on (cgroup v1, the missing CAP_SYS_RESOURCE, the node IP) are in
shared/notes/real-node.md; each is named where it is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from labtune_dev import certs
from labtune_dev.binaries import cache_root, progress
from labtune_dev.node_binaries import CONTAINERD, NodeBinaries, ensure_node_binaries
from labtune_dev.oci import OciError, OciImage
from labtune_dev.pause_image import PAUSE_IMAGE, pause_image
from labtune_dev.processes import Process, free_port, launch, log_tail, probe, terminate, wait_healthy
from labtune_dev.tools import ensure_commands

CLUSTER_DOMAIN = "cluster.local"
GPU_RESOURCE = "nvidia.com/gpu"
K8S_NAMESPACE = "k8s.io"  # containerd's namespace of the CRI
_STARTUP_TIMEOUT_S = 120.0


class NodeError(RuntimeError):
    """The node could not be started or an image not loaded; the message says which step."""


class NodeSettings(BaseModel):
    name: str = "labtune-dev-node"
    bridge: str = "labtune0"
    pod_cidr: str = "10.244.0.0/24"
    gpus: int = 0
    """nvidia.com/gpu capacity to advertise (an extended resource: pods run on the CPU)."""

    @property
    def address(self) -> str:
        """The node's IP: the bridge's first address, the pods' gateway."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))


def ensure_bridge(settings: NodeSettings) -> None:
    """The pod bridge with the node's address, up (idempotent); before the apiserver binds to it."""
    if _ip("link", "show", settings.bridge, check=False).returncode != 0:
        _ip("link", "add", settings.bridge, "type", "bridge")
    prefix = ipaddress.ip_network(settings.pod_cidr).prefixlen
    if f"{settings.address}/{prefix}" not in _ip("-o", "addr", "show", "dev", settings.bridge).stdout:
        _ip("addr", "add", f"{settings.address}/{prefix}", "dev", settings.bridge)
    _ip("link", "set", settings.bridge, "up")


def remove_bridge(settings: NodeSettings) -> None:
    _ip("link", "del", settings.bridge, check=False)


class Node:
    """One node of the cluster whose apiserver is `server` (with CA and admin kubeconfig from its PKI).

    start() builds what is missing (minutes, once), then starts containerd, kubelet, kube-proxy and
    CoreDNS and waits for the Node to be Ready; stop() removes its pods, processes, mounts, iptables
    rules and files, and the Node object. Images stay in containerd's content store under the cache,
    so a later node starts with them (one node at a time uses it; another gets a private store).
    """

    def __init__(self, settings: NodeSettings, server: str, pki: certs.ControlPlaneCerts, kubeconfig: Path):
        self.settings = settings
        self._server, self._pki, self._admin_kubeconfig = server, pki, kubeconfig
        self._dir: Path | None = None
        self._processes: list[Process] = []
        self._store_lock: IO[str] | None = None
        self._binaries: NodeBinaries | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise NodeError("the node is not started; call start() first")
        return self._dir

    @property
    def socket(self) -> Path:
        return self.directory / "containerd" / "containerd.sock"

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def pod_logs_dir(self) -> Path:
        return self.directory / "pod-logs"

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        binaries = self._binaries = ensure_node_binaries()
        pause = pause_image()
        started = time.monotonic()
        self._dir = Path(tempfile.mkdtemp(prefix="labtune-node-"))
        try:
            self.logs_dir.mkdir()
            ensure_bridge(self.settings)
            _sysctl("net.ipv4.ip_forward", "1")  # pods reach Services (DNAT) through the host
            self._start_containerd(binaries)
            self.load_image(pause)
            self._start_kubelet(binaries)
            self._start_kube_proxy(binaries)
            self._start_coredns(binaries)
            self._wait_ready()
            if self.settings.gpus:
                self._advertise_gpus()
        except BaseException:
            self.stop()
            raise
        progress(f"node {self.name} Ready at {self.settings.address} in {time.monotonic() - started:.1f}s")

    def exited(self) -> list[str]:
        return [process.name for process in self._processes if process.popen.poll() is not None]

    def load_image(self, image: OciImage) -> None:
        """Imports an image into the CRI's image store, unless that very image is there."""
        load_image(self.directory, image)

    def remove_image(self, name: str) -> None:
        """Removes the image named `name` from the CRI's image store (its blobs go with the next GC)."""
        _ctr(self.directory, "images", "rm", name)

    def stop(self) -> None:
        """Stops everything the node started and removes its files. Idempotent."""
        if self._dir is None:
            return
        with contextlib.suppress(Exception):  # the apiserver may be gone already
            self._delete_pods()
        for process in reversed(self._processes):
            terminate(process.popen)
        self._processes.clear()
        self._kill_shims()
        if self._binaries is not None:
            subprocess.run([str(self._binaries.kube_proxy), "--cleanup"], capture_output=True, check=False)
        _remove_kubelet_chains()
        _unmount_below(self._dir)
        with contextlib.suppress(Exception), self._api() as api:
            client.CoreV1Api(api).delete_node(self.name)
        if self._store_lock is not None:
            self._store_lock.close()
            self._store_lock = None
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    # --- containerd ------------------------------------------------------------------------

    def _start_containerd(self, binaries: NodeBinaries) -> None:
        root = self._image_store()
        state = self.directory / "containerd"
        conf_dir = self.directory / "cni"
        conf_dir.mkdir()
        (conf_dir / "10-labtune.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config_file = self.directory / "containerd.toml"
        config_file.write_text(
            _CONTAINERD_CONFIG.format(
                root=root,
                state=state,
                socket=self.socket,
                runc=binaries.runc,
                runc_root=self.directory / "runc",
                cni_bin=binaries.cni_dir,
                cni_conf=conf_dir,
                pause=PAUSE_IMAGE,
            )
        )
        env = {**os.environ, "PATH": ":".join([*binaries.path_dirs, os.environ.get("PATH", "")])}
        process = self._launch("containerd", [str(binaries.containerd), "--config", str(config_file)], env)
        wait_healthy(process, self._containerd_answers, _STARTUP_TIMEOUT_S, NodeError, "ctr version: ")

    def _image_store(self) -> Path:
        """containerd's root: the shared store in the cache, or a private one when another node has it."""
        shared = cache_root() / "node" / "containerd"
        shared.mkdir(parents=True, exist_ok=True)
        lock = (shared.parent / "containerd.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            progress(f"another node uses {shared}; this one starts with an empty image store")
            return self.directory / "containerd-root"
        self._store_lock = lock
        return shared

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "labtune",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.settings.bridge,
                    "isGateway": True,
                    "ipMasq": False,  # pods reach the host and each other, nothing beyond
                    "hairpinMode": True,  # a pod reaches itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.settings.pod_cidr, "gateway": self.settings.address}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.directory / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _containerd_answers(self) -> str | None:
        result = _ctr_run(self.directory, "version")
        return None if result.returncode == 0 else result.stderr.strip()[-300:]

    # --- kubelet, kube-proxy, CoreDNS -----------------------------------------------------------

    def _start_kubelet(self, binaries: NodeBinaries) -> None:
        pki = self.directory / "pki"
        client_cert = certs.issue_client_cert(
            pki, "kubelet-client", self._pki.ca, f"system:node:{self.name}", ["system:nodes"]
        )
        serving = certs.issue_serving_cert(
            pki, "kubelet", self._pki.ca, [self.name, "localhost"], [self.settings.address, "127.0.0.1"]
        )
        kubeconfig = self._kubeconfig("kubelet", client_cert)
        healthz = free_port()
        config_file = self.directory / "kubelet.yaml"
        config_file.write_text(yaml.safe_dump(self._kubelet_config(serving, healthz), sort_keys=False))
        root = self.directory / "kubelet"
        args = [
            str(binaries.kubelet),
            f"--config={config_file}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={root}",
            f"--cert-dir={pki}",
            f"--node-ip={self.settings.address}",
            f"--hostname-override={self.name}",
        ]
        env = {**os.environ, "PATH": ":".join([*binaries.path_dirs, os.environ.get("PATH", "")])}
        process = self._launch("kubelet", args, env)
        url = f"http://127.0.0.1:{healthz}/healthz"
        wait_healthy(process, lambda: probe(url, None), _STARTUP_TIMEOUT_S, NodeError, f"{url}: ")

    def _kubelet_config(self, serving: certs.CertKey, healthz: int) -> dict[str, Any]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroups are v1 here (real-node.md): kubelet 1.35+ refuses them unless told, then warns.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": self.settings.address,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self._pki.ca.cert)},
            },
            # Only holders of the cluster CA's certs reach it at all (the apiserver, for logs and exec).
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [self.settings.address],
            "clusterDomain": CLUSTER_DOMAIN,
            "podLogsDir": str(self.pod_logs_dir),
            "failSwapOn": False,
            "serializeImagePulls": False,
            # The trainer image is several GB on a disk shared with the caches: evict and collect
            # images only when the disk is really full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            "imageGCHighThresholdPercent": 98,
            "imageGCLowThresholdPercent": 95,
            "syncFrequency": "10s",
            "fileCheckFrequency": "0s",
            "volumeStatsAggPeriod": "0s",  # no per-volume du walks of the artifact claim
        }

    def _start_kube_proxy(self, binaries: NodeBinaries) -> None:
        client_cert = certs.issue_client_cert(
            self.directory / "pki", "kube-proxy", self._pki.ca, "system:kube-proxy", []
        )
        healthz = free_port()
        proxy_config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self._kubeconfig("kube-proxy", client_cert))},
            "mode": "iptables",
            "hostnameOverride": self.name,
            "clusterCIDR": self.settings.pod_cidr,
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # A pod reaching another pod on the same bridge through a Service gets its reply back
            # through the host (not straight over the bridge, which would skip the DNAT's reversal).
            "iptables": {"masqueradeAll": True},
            "conntrack": {"maxPerCore": 0},  # leave the host's conntrack table size alone
        }
        config_file = self.directory / "kube-proxy.yaml"
        config_file.write_text(yaml.safe_dump(proxy_config, sort_keys=False))
        process = self._launch("kube-proxy", [str(binaries.kube_proxy), f"--config={config_file}"])
        url = f"http://127.0.0.1:{healthz}/healthz"
        wait_healthy(process, lambda: probe(url, None), _STARTUP_TIMEOUT_S, NodeError, f"{url}: ")

    def _start_coredns(self, binaries: NodeBinaries) -> None:
        self._grant_coredns()
        client_cert = certs.issue_client_cert(
            self.directory / "pki", "coredns", self._pki.ca, _COREDNS_USER, []
        )
        ready = free_port()
        corefile = self.directory / "Corefile"
        corefile.write_text(
            _COREFILE.format(
                address=self.settings.address,
                domain=CLUSTER_DOMAIN,
                kubeconfig=self._kubeconfig("coredns", client_cert),
                ready=ready,
            )
        )
        process = self._launch("coredns", [str(binaries.coredns), "-conf", str(corefile)])
        url = f"http://127.0.0.1:{ready}/ready"
        wait_healthy(process, lambda: probe(url, None), _STARTUP_TIMEOUT_S, NodeError, f"{url}: ")

    def _grant_coredns(self) -> None:
        """What CoreDNS' kubernetes plugin reads, as its published ClusterRole grants it."""
        rbac = {"apiVersion": "rbac.authorization.k8s.io/v1"}
        role: Any = {
            **rbac,
            "kind": "ClusterRole",
            "metadata": {"name": "labtune-dev:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        }  # fmt: skip
        binding: Any = {
            **rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "labtune-dev:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "labtune-dev:coredns"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": _COREDNS_USER}],
        }  # fmt: skip
        with self._api() as api:
            rbac_api = client.RbacAuthorizationV1Api(api)
            for create, body in (
                (rbac_api.create_cluster_role, role),
                (rbac_api.create_cluster_role_binding, binding),
            ):
                try:
                    create(body)
                except ApiException as error:
                    if error.status != 409:
                        raise

    # --- the Node object --------------------------------------------------------------------

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        with self._api() as api:
            core = client.CoreV1Api(api)
            while True:
                if exited := self.exited():
                    logs = "".join(log_tail(p.log) for p in self._processes if p.name in exited)
                    raise NodeError(f"{', '.join(exited)} exited{logs}")
                if _is_ready(core, self.name):
                    return
                if time.monotonic() > deadline:
                    kubelet = next(p for p in self._processes if p.name == "kubelet")
                    raise NodeError(
                        f"node {self.name} was not Ready in {_STARTUP_TIMEOUT_S:.0f}s{log_tail(kubelet.log)}"
                    )
                time.sleep(0.5)

    def _advertise_gpus(self) -> None:
        """An extended resource on the Node's status, the documented way to advertise one without a
        device plugin; kubelet keeps it."""
        path = "/status/capacity/" + GPU_RESOURCE.replace("/", "~1")
        with self._api() as api:
            client.CoreV1Api(api).patch_node_status(
                self.name, [{"op": "add", "path": path, "value": str(self.settings.gpus)}]
            )

    def _delete_pods(self) -> None:
        """Deletes the node's pods and waits (briefly) for kubelet to stop their containers."""
        with self._api() as api:
            core = client.CoreV1Api(api)
            selector = f"spec.nodeName={self.name}"
            for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
                meta = pod.metadata
                with contextlib.suppress(ApiException):
                    if meta is not None and meta.name and meta.namespace:
                        core.delete_namespaced_pod(meta.name, meta.namespace, grace_period_seconds=5)
            deadline = time.monotonic() + 30
            while core.list_pod_for_all_namespaces(field_selector=selector).items:
                if time.monotonic() > deadline or self.exited():
                    break
                time.sleep(0.5)

    # --- helpers ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _api(self) -> Iterator[client.ApiClient]:
        api: client.ApiClient = config.new_client_from_config(config_file=str(self._admin_kubeconfig))  # type: ignore[no-untyped-call]
        try:
            yield api
        finally:
            api.close()  # type: ignore[no-untyped-call]

    def _kubeconfig(self, name: str, cert: certs.CertKey) -> Path:
        path, ca = self.directory / f"{name}.kubeconfig", self._pki.ca.cert
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "labtune-dev",
                          "cluster": {"server": self._server, "certificate-authority": str(ca)}}],
            "users": [{"name": name,
                       "user": {"client-certificate": str(cert.cert), "client-key": str(cert.key)}}],
            "contexts": [{"name": "labtune-dev", "context": {"cluster": "labtune-dev", "user": name}}],
            "current-context": "labtune-dev",
        }  # fmt: skip
        path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        return path

    def _launch(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        process = launch(name, args, self.logs_dir / f"{name}.log", self.directory, env)
        self._processes.append(process)
        return process

    def _kill_shims(self) -> None:
        """containerd's shims outlive it (by design): kill those of this node and their containers."""
        marker = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(proc.name), 9)


_COREDNS_USER = "labtune-dev:coredns"

# containerd 2.x configuration (version 3). The root (images) is in the cache, the state per node.
_CONTAINERD_CONFIG = """version = 3
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{pause}"

[plugins.'io.containerd.cri.v1.runtime']
  # root lacks CAP_SYS_RESOURCE here (real-node.md): runc cannot set the -998 the CRI asks for
  # sandboxes ("can't get final child's PID from pipe: EOF") unless containerd keeps it within reach.
  restrict_oom_score_adj = true
  # Pod network namespaces under the node's folder, not /run/netns: stop() unmounts them with the rest.
  netns_mounts_under_state_dir = true

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{runc_root}"
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["{cni_bin}"]
  conf_dir = "{cni_conf}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""

# No `forward`: nothing outside the machine answers; other names fail at once instead of timing out.
_COREFILE = """.:53 {{
    bind {address}
    errors
    ready 127.0.0.1:{ready}
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} labtune-dev
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""


def load_image(node_dir: Path, image: OciImage) -> None:
    """Imports an image into the CRI image store of the node in `node_dir` (also from another process
    than the node's, e.g. the demo), unless that very image is there: its image layout is streamed
    into `ctr images import`, without the layers containerd has."""
    if _image_digest(node_dir, image.name) == image.manifest_digest:
        return
    started = time.monotonic()
    have = set(_ctr(node_dir, "content", "ls", "--quiet").split())
    command = ctr_argv(node_dir, "images", "import", "--snapshotter", "overlayfs", "-")
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT)
        assert process.stdin is not None  # stdin=PIPE
        try:
            sent = image.write_layout(process.stdin, skip=have)
            process.stdin.close()
        except BrokenPipeError:
            sent = 0  # ctr stopped reading: its exit status and output say why
        except BaseException as error:
            process.kill()
            process.wait()
            if isinstance(error, OciError):
                raise NodeError(f"cannot load {image.name}: {error}") from error
            raise
        returncode = process.wait()
        output.seek(0)
        said = output.read().decode(errors="replace").strip()
    if returncode != 0:
        raise NodeError(f"`ctr images import` of {image.name} failed (exit {returncode}): {said[-2000:]}")
    seconds = time.monotonic() - started
    progress(f"loaded {image.name} into the node in {seconds:.1f}s ({sent / 1e6:.0f} MB of new layers)")


def _ctr(node_dir: Path, *args: str) -> str:
    result = _ctr_run(node_dir, *args)
    if result.returncode != 0:
        raise NodeError(f"`ctr {' '.join(args)}` failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def _ctr_run(node_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ctr_argv(node_dir, *args), capture_output=True, text=True, check=False)


def ctr_argv(node_dir: Path, *args: str) -> list[str]:
    ctr = ensure_commands(CONTAINERD) / "ctr"
    socket = node_dir / "containerd" / "containerd.sock"
    return [str(ctr), "--address", str(socket), "--namespace", K8S_NAMESPACE, *args]


def _image_digest(node_dir: Path, name: str) -> str | None:
    for line in _ctr(node_dir, "images", "ls").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == name:
            return fields[2]
    return None


def _is_ready(core: client.CoreV1Api, name: str) -> bool:
    try:
        node = core.read_node(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    conditions = (node.status.conditions if node.status else None) or []
    # kube-controller-manager lifts the not-ready taint a moment after kubelet reports Ready; until
    # then nothing schedules there.
    taints = (node.spec.taints if node.spec else None) or []
    untainted = not any(t.key == "node.kubernetes.io/not-ready" for t in taints)
    return untainted and any(c.type == "Ready" and c.status == "True" for c in conditions)


def _unmount_below(folder: Path) -> None:
    """Lazily unmounts everything mounted under `folder` (pod volumes, rootfs), deepest first."""
    prefix = str(folder.resolve()) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def _remove_kubelet_chains() -> None:
    """The iptables chains kubelet makes whatever its flags (kube-proxy --cleanup leaves them)."""
    for iptables in ("iptables", "ip6tables"):
        for table, chain, parents in (
            ("filter", "KUBE-FIREWALL", ("INPUT", "OUTPUT")),
            ("filter", "KUBE-KUBELET-CANARY", ()),
            ("nat", "KUBE-KUBELET-CANARY", ()),
            ("mangle", "KUBE-KUBELET-CANARY", ()),
            ("mangle", "KUBE-IPTABLES-HINT", ()),
        ):
            commands = [["-D", parent, "-j", chain] for parent in parents] + [["-F", chain], ["-X", chain]]
            for command in commands:
                subprocess.run([iptables, "-t", table, *command], capture_output=True, check=False)


def _sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NodeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result
