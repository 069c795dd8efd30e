"""A node that stops leaves nothing behind: no process, mount, iptables chain, file or Node object."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from nodetest import NODE  # the session's node settings: its bridge carries the apiserver's address

from labtune_dev.controlplane import ControlPlane
from labtune_dev.node import Node, NodeSettings


def _mounts_below(folder: Path) -> list[str]:
    prefix = str(folder) + "/"
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]  # fmt: skip


def _processes_mentioning(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and marker in cmdline:
            found.append(cmdline.replace("\0", " "))
    return found


def _kube_chains() -> list[str]:
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in saved.splitlines() if "KUBE-" in line]


def test_stop_leaves_nothing_behind(control_plane: ControlPlane | None, kube_controllers: None,
                                    api_client: client.ApiClient) -> None:  # fmt: skip
    if control_plane is None or control_plane.address == "127.0.0.1":
        pytest.skip("needs the session's control plane on a node address (root)")
    node = Node(
        NodeSettings(name="labtune-lifecycle-node", bridge=NODE.bridge, pod_cidr=NODE.pod_cidr),
        control_plane.server,
        control_plane.pki,
        control_plane.kubeconfig,
    )
    node.start()
    directory = node.directory
    assert _processes_mentioning(str(directory))
    assert _kube_chains()
    node.stop()
    assert not _processes_mentioning(str(directory))
    assert not _mounts_below(directory)
    assert not directory.exists()
    assert not _kube_chains()
    names = [n.metadata.name for n in client.CoreV1Api(api_client).list_node().items]
    assert "labtune-lifecycle-node" not in names
