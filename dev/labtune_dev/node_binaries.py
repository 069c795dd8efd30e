"""Builds (once) or finds what a real node runs, next to the control plane's binaries:

- kubelet and kube-proxy, built with the control plane from `k8s.io/kubernetes` (labtune_dev.binaries),
- containerd v2 (containerd, containerd-shim-runc-v2, ctr) from the Go module
  `github.com/containerd/containerd/v2`, and CoreDNS from `github.com/coredns/coredns`, into
  `$LABTUNE_CACHE/gotools/<name>-<version>/` like the chart's tools,
- runc, the CNI plugins (bridge, host-local, loopback, portmap), iptables and conntrack from Debian's
  packages, installed with apt-get when missing (the node runs as root).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labtune_dev.binaries import (
    NODE_COMMANDS,
    BinariesError,
    ensure_binaries,
    ensure_debian_packages,
    missing_binaries,
)
from labtune_dev.tools import GoCommands, ensure_commands

CONTAINERD_MODULE, CONTAINERD_VERSION = "github.com/containerd/containerd/v2", "v2.4.2"
COREDNS_MODULE, COREDNS_VERSION = "github.com/coredns/coredns", "v1.14.7"
# btrfs, devmapper and zfs snapshotters need C headers this machine lacks and the node does not use
# (it runs overlayfs); containerd's Makefile stamps the version `ctr version` and the CRI report.
CONTAINERD = GoCommands(
    "containerd",
    CONTAINERD_MODULE,
    CONTAINERD_VERSION,
    ("cmd/containerd", "cmd/containerd-shim-runc-v2", "cmd/ctr"),
    (f"{CONTAINERD_MODULE}/version.Version={CONTAINERD_VERSION}",),
    ("no_btrfs", "no_devmapper", "no_zfs"),
)
# CoreDNS with only the plugins the node's Corefile names (labtune_dev.node): the module's own main
# links all 50-odd, cloud DNS SDKs among them: 129 s against 101 s from a cold Go build cache here,
# a 78 MB binary against 52 MB.
_COREDNS_PLUGINS = ("bind", "cache", "errors", "kubernetes", "ready")
_COREDNS_MAIN = """package main

import (
	"github.com/coredns/coredns/coremain"
{imports}
)

func main() {{
	coremain.Run()
}}
""".format(imports="\n".join(f'\t_ "{COREDNS_MODULE}/plugin/{plugin}"' for plugin in _COREDNS_PLUGINS))
COREDNS = GoCommands("coredns-node", COREDNS_MODULE, COREDNS_VERSION, ("",), main=_COREDNS_MAIN)
CNI_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
# Debian package → a file it installs that the node needs.
DEBIAN_PACKAGES = {
    "runc": Path("/usr/sbin/runc"),
    "containernetworking-plugins": CNI_DIR / "bridge",
    "iptables": Path("/usr/sbin/iptables"),
    "conntrack": Path("/usr/sbin/conntrack"),
}


@dataclass(frozen=True)
class NodeBinaries:
    """Where every program of the node is."""

    kubelet: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    coredns: Path
    runc: Path
    cni_dir: Path

    @property
    def path_dirs(self) -> list[str]:
        """Folders the node's processes need on PATH (containerd finds its shim, the shim runc)."""
        return sorted({str(self.containerd.parent), str(self.runc.parent)})


def ensure_node_binaries() -> NodeBinaries:
    """Returns the node's programs, building or installing what is missing (minutes, once)."""
    ensure_debian_packages(DEBIAN_PACKAGES, "the node")
    kube = ensure_binaries()
    if missing := missing_binaries(kube, NODE_COMMANDS):
        raise BinariesError(f"{kube} (KUBEBUILDER_ASSETS) lacks {', '.join(missing)}; add them or unset it")
    containerd, coredns = ensure_commands(CONTAINERD), ensure_commands(COREDNS)
    return NodeBinaries(
        kubelet=kube / "kubelet",
        kube_proxy=kube / "kube-proxy",
        containerd=containerd / "containerd",
        containerd_shim=containerd / "containerd-shim-runc-v2",
        ctr=containerd / "ctr",
        coredns=coredns / "coredns",
        runc=DEBIAN_PACKAGES["runc"],
        cni_dir=CNI_DIR,
    )
