"""Fixtures for tests that need the labtune.io CRDs installed, or the real Kueue controller."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from labtune.api import GROUP, KINDS
from labtune_dev.kueue import KueueController, kueue_controller

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="session")
def labtune_crds(api_client: client.ApiClient) -> list[str]:
    """Installs (or updates) the CRDs from crds/ and waits until the API server serves them."""
    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for path in sorted(CRD_DIR.glob(f"*.{GROUP}.yaml")):
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]
        try:
            existing = ext.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = existing.metadata.resource_version
            ext.replace_custom_resource_definition(name, body)
        except ApiException as error:
            if error.status != 404:
                raise
            ext.create_custom_resource_definition(body)
        names.append(name)
    assert len(names) == len(KINDS)
    deadline = time.monotonic() + 60
    for name in names:
        while not _established(ext, name):
            if time.monotonic() > deadline:
                pytest.fail(f"CRD {name} not Established within 60s")
            time.sleep(0.2)
    return names


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = ext.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="module")
def kueue(
    kubeconfig: Path, kube_controllers: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KueueController]:
    """Kueue's controller for the tests of one module. Not for the session: while it runs, Kueue
    admits or holds every Job with a queue label, so a later module's run would see Kueue's
    reason (a LocalQueue that does not exist) where it tests the operator without Kueue."""
    with kueue_controller(kubeconfig, tmp_path_factory.mktemp("kueue")) as running:
        yield running
