"""Shared fixtures: a real Kubernetes API for the integration tests.

By default the session starts a local control plane (labtune_dev); with
USE_EXISTING_CLUSTER=true (the envtest convention) the tests use the cluster in $KUBECONFIG.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client, config
from nodetest import NODE

from labtune_dev.binaries import ensure_binaries
from labtune_dev.controlplane import ControlPlane
from labtune_dev.health_check import ensure_health_tool
from labtune_dev.images import IMAGES, build_image
from labtune_dev.kueue import ensure_kueue
from labtune_dev.node import Node, ensure_bridge, remove_bridge
from labtune_dev.node_binaries import ensure_node_binaries
from labtune_dev.pause_image import pause_image
from labtune_dev.tools import Tools, ensure_tools

_INTEGRATION_DIR = Path(__file__).parent / "integration"


def _use_existing_cluster() -> bool:
    return os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Builds the binaries, images and tools (minutes, once) before any test runs, outside the per-test
    timeout. The Go builds (CPU) and the image builds (downloads, disk) run side by side: on a cold
    cache that shortens the set-up by the images' share."""
    if session.config.option.collectonly:
        return

    def uses(fixture: str) -> bool:
        return any(fixture in getattr(item, "fixturenames", ()) for item in session.items)

    def cluster() -> None:
        if (
            any(item.get_closest_marker("integration") for item in session.items)
            and not _use_existing_cluster()
        ):
            ensure_binaries()
        if uses("node") and _can_run_node():
            ensure_node_binaries()
            pause_image()
        if uses("tools"):
            ensure_tools()
        if uses("health_tool"):
            ensure_health_tool()
        if uses("kueue"):
            ensure_kueue()

    def images() -> None:
        if (uses("demo") or uses("built")) and _can_run_node():
            for name in IMAGES:  # the project's images, built from its Dockerfiles (cached layers)
                build_image(name)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for job in [pool.submit(cluster), pool.submit(images)]:
            job.result()


@pytest.fixture(scope="session")
def tools() -> Tools:
    """helm, prometheus, promtool and the prometheus-operator CRDs (labtune_dev.tools)."""
    return ensure_tools()


def _can_run_node() -> bool:
    """A node needs root (network namespaces, mounts, cgroups) and Linux."""
    return sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane | None]:
    """The session's local control plane; None when USE_EXISTING_CLUSTER=true. Where a node can run,
    the apiserver listens on the node's address (pods reach it through the `kubernetes` Service)."""
    if _use_existing_cluster():
        yield None
        return
    if not _can_run_node():
        with ControlPlane() as plane:
            yield plane
        return
    ensure_bridge(NODE)
    try:
        with ControlPlane(address=NODE.address) as plane:
            yield plane
    finally:
        remove_bridge(NODE)


@pytest.fixture(scope="module")
def node(control_plane: ControlPlane | None, kube_controllers: None) -> Iterator[Node]:
    """A real node (containerd, kubelet, kube-proxy, CoreDNS) for one test module, advertising
    NODE.gpus nvidia.com/gpu; it leaves with its pods when the module ends, so no other test's pod
    lands on it."""
    if control_plane is None:
        pytest.skip("USE_EXISTING_CLUSTER=true: the node tests run on the dev cluster's own node")
    if control_plane.address != NODE.address:
        pytest.skip("a node needs root on Linux")
    with Node(NODE, control_plane.server, control_plane.pki, control_plane.kubeconfig) as started:
        yield started


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane | None) -> Path:
    """An admin kubeconfig for the session's cluster."""
    if control_plane is not None:
        return control_plane.kubeconfig
    path = os.environ.get("KUBECONFIG")
    if not path:
        pytest.fail("USE_EXISTING_CLUSTER=true needs KUBECONFIG to point at the cluster", pytrace=False)
    return Path(path)


@pytest.fixture(scope="session")
def kube_controllers(control_plane: ControlPlane | None) -> None:
    """kube-controller-manager and kube-scheduler run (an existing cluster has its own)."""
    if control_plane is not None:
        control_plane.start_controllers()


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    yield api
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh Namespace, deleted (without waiting) after the test."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def without_torch(tmp_path: Path) -> dict[str, str]:
    """An environment in which importing torch or transformers fails: what runs in it never did."""
    for name in ("torch", "transformers"):
        package = tmp_path / "guard" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('{name} was imported')\n")
    return os.environ | {"PYTHONPATH": str(tmp_path / "guard")}


@pytest.fixture
def port_in_use() -> Iterator[int]:
    """A port something else listens on (on every address, as the metrics server would)."""
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        yield holder.getsockname()[1]
