"""The LAB pipeline end to end, as `make demo` runs it: a taxonomy in an https git server →
Taxonomy → SyntheticDataRun (SmolLM2 teacher on llama.cpp) → TuningJob (LoRA on CPU), every pod
placed by kube-scheduler on the node agent's Node and run there; assertions on the files produced
on the artifact claim and on the status the operator wrote."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubetest import condition, eventually

from labtune.api import GROUP, VERSION
from labtune.devcluster.demo import DemoSettings, DemoState, demo_environment
from labtune.devcluster.nodeagent import NodeAgentError, check_host

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "examples/demo/manifests"
PLURALS = {"Taxonomy": "taxonomies", "SyntheticDataRun": "syntheticdataruns", "TuningJob": "tuningjobs"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def demo(
    kubeconfig: Path,
    kube_controllers: None,
    labtune_crds: list[str],
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DemoSettings, DemoState]]:
    """The demo's environment for one namespace, on its own bridge and free ports."""
    try:
        check_host()
    except NodeAgentError as error:
        pytest.skip(str(error))
    suffix = uuid.uuid4().hex[:6]
    settings = DemoSettings(
        kubeconfig=kubeconfig,
        state_dir=tmp_path_factory.mktemp("demo"),
        examples=ROOT / "examples/demo",
        namespace=namespace,
        node_name=f"e2e-{suffix}",
        bridge=f"lte{suffix}",
        pod_cidr=f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24",
        git_port=0,
        teacher_port=0,
    )
    with demo_environment(settings) as state:
        yield settings, state


def _manifests(state: DemoState) -> list[dict[str, Any]]:
    """examples/demo/manifests with this environment's git and teacher URLs."""
    bodies = [yaml.safe_load(path.read_text()) for path in sorted(MANIFESTS.glob("*.yaml"))]
    for body in bodies:
        if body["kind"] == "Taxonomy":
            body["spec"]["source"]["git"]["url"] = f"{state.git_url}/taxonomy.git"
        if body["kind"] == "SyntheticDataRun":
            body["spec"]["teacher"]["endpoint"]["url"] = state.teacher_url
    return bodies


def test_taxonomy_to_tuned_adapter(
    api_client: client.ApiClient, namespace: str, demo: tuple[DemoSettings, DemoState]
) -> None:
    settings, state = demo
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    for body in _manifests(state):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[body["kind"]], body)

    def finished(plural: str, timeout: float) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status: dict[str, Any] = (
                custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, "demo").get("status")
                or {}
            )
            done = condition(status, "Succeeded" if plural != "taxonomies" else "Ready")
            if (
                condition(status, "Stalled").get("status") == "True"
                or condition(status, "Failed").get("status") == "True"
            ):
                pytest.fail(f"{plural}/demo failed: {status.get('conditions')}")
            return status if done.get("status") == "True" else None

        return eventually(probe, timeout=timeout, what=f"{plural}/demo to succeed")

    taxonomy = finished("taxonomies", 300)
    assert taxonomy["revision"] == state.taxonomy_commit
    assert taxonomy["leafCounts"]["total"] == 3
    assert taxonomy["errorCount"] == 0

    run = finished("syntheticdataruns", 900)
    assert run["taxonomyRevision"] == state.taxonomy_commit
    for name in ("knowledge", "skills"):
        output = run["outputs"][name]
        path = state.claim_dir / output["uri"].removeprefix("pvc://labtune-artifacts/")
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert output["samples"] == len(records) > 0
        assert output["sha256"] == _sha256(path)
        assert all({"id", "messages", "metadata", "unmask"} <= record.keys() for record in records)
        assert all(m["role"] in ("system", "user", "assistant") for r in records for m in r["messages"])

    job = finished("tuningjobs", 900)
    assert job["lineage"]["taxonomyRevision"] == state.taxonomy_commit
    assert {d["sha256"] for d in job["lineage"]["datasets"]} == {
        run["outputs"]["knowledge"]["sha256"],
        run["outputs"]["skills"]["sha256"],
    }
    adapter = state.claim_dir / job["output"]["adapter"].removeprefix("pvc://labtune-artifacts/")
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    sums = (adapter / "SHA256SUMS").read_text().splitlines()
    assert job["output"]["adapterSha256"] == _sha256(adapter / "SHA256SUMS")
    assert all(line.split()[0] == _sha256(adapter / line.split()[1]) for line in sums)
    assert [c["phase"] for c in job["checkpoints"]] == ["knowledge", "skills"]

    pods = core.list_namespaced_pod(namespace).items
    jobs = {p.metadata.labels["job-name"] for p in pods}
    assert {"demo-generate", "demo-train"} <= jobs
    assert any(name.startswith("demo-sync-") for name in jobs)
    scheduled = {
        e.involved_object.name
        for e in core.list_namespaced_event(namespace).items
        if e.reason == "Scheduled" and f"to {settings.node_name}" in (e.message or "")
    }
    for pod in pods:
        assert pod.spec.node_name == settings.node_name
        assert pod.metadata.name in scheduled  # bound by kube-scheduler, not placed by hand
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(settings.pod_cidr)
        assert pod.status.phase == "Succeeded"
        terminated = pod.status.container_statuses[0].state.terminated
        assert terminated.exit_code == 0
        assert json.loads(terminated.message)  # the summary the operator read
