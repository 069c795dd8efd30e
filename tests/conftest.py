"""Shared fixtures: a real Kubernetes API for the integration tests.

By default the session starts a local control plane (labtune.devcluster); with
USE_EXISTING_CLUSTER=true (the envtest convention) the tests use the cluster in $KUBECONFIG.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from labtune.devcluster.binaries import ensure_binaries
from labtune.devcluster.controlplane import ControlPlane
from labtune.devcluster.tools import Tools, ensure_tools

_INTEGRATION_DIR = Path(__file__).parent / "integration"


def _use_existing_cluster() -> bool:
    return os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Builds the binaries and tools (minutes, once) before any test runs, outside the per-test timeout."""
    wanted = any(item.get_closest_marker("integration") for item in session.items)
    if wanted and not session.config.option.collectonly and not _use_existing_cluster():
        ensure_binaries()
    tools_wanted = any("tools" in getattr(item, "fixturenames", ()) for item in session.items)
    if tools_wanted and not session.config.option.collectonly:
        ensure_tools()


@pytest.fixture(scope="session")
def tools() -> Tools:
    """helm, prometheus, promtool and the prometheus-operator CRDs (labtune.devcluster.tools)."""
    return ensure_tools()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane | None]:
    """The session's local control plane; None when USE_EXISTING_CLUSTER=true."""
    if _use_existing_cluster():
        yield None
        return
    with ControlPlane() as plane:
        yield plane


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
