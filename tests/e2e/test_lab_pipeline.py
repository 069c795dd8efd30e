"""The LAB pipeline end to end, as `make demo` runs it: a taxonomy in an https git server →
Taxonomy → SyntheticDataRun (SmolLM2 teacher on llama.cpp) → TuningJob (LoRA on CPU), the operator
installed with `helm install` and running as a pod, every pod placed by kube-scheduler on the real node
and run by kubelet and containerd from the images this repository's Dockerfiles build; assertions on
the files produced on the artifact claim and on the status the operator wrote."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubetest import condition, eventually

from labtune.api import GROUP, VERSION
from labtune.contract.evaluate import EvalExample, EvaluateSummary
from labtune.operator.settings import OperatorSettings
from labtune_dev.binaries import ensure_debian_packages
from labtune_dev.demo import DemoSettings, DemoState, demo_environment
from labtune_dev.node import Node
from labtune_dev.oci import image_from_files

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "examples/demo/manifests"
BUSYBOX = Path("/bin/busybox")
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
    node: Node,
    labtune_crds: list[str],
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DemoSettings, DemoState]]:
    """The demo's environment for one namespace, on free ports, with its own Helm release."""
    suffix = uuid.uuid4().hex[:6]
    settings = DemoSettings(
        kubeconfig=kubeconfig,
        node_dir=node.directory,
        node_address=node.settings.address,
        state_dir=tmp_path_factory.mktemp("demo"),
        examples=ROOT / "examples/demo",
        namespace=namespace,
        git_port=0,
        teacher_port=0,
        release=f"e2e-{suffix}",
        operator_namespace=f"e2e-operator-{suffix}",
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


def test_operator_runs_in_the_cluster_from_its_image(
    api_client: client.ApiClient, demo: tuple[DemoSettings, DemoState], node: Node
) -> None:
    settings, _ = demo
    core = client.CoreV1Api(api_client)
    (pod,) = core.list_namespaced_pod(settings.operator_namespace).items
    assert pod.spec.node_name == node.name
    assert pod.status.container_statuses[0].ready
    assert pod.status.container_statuses[0].image == "ghcr.io/labtune/operator:0.1.0"
    assert pod.spec.security_context.run_as_user == 65532


def _finished(
    custom: client.CustomObjectsApi, namespace: str, plural: str, name: str, timeout: float
) -> dict[str, Any]:
    """The resource's status once Succeeded (a Taxonomy: Ready); fails the test when it fails."""

    def probe() -> dict[str, Any] | None:
        status: dict[str, Any] = (
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name).get("status") or {}
        )
        done = condition(status, "Succeeded" if plural != "taxonomies" else "Ready")
        if (
            condition(status, "Stalled").get("status") == "True"
            or condition(status, "Failed").get("status") == "True"
        ):
            pytest.fail(f"{plural}/{name} failed: {status.get('conditions')}")
        return status if done.get("status") == "True" else None

    found: dict[str, Any] = eventually(probe, timeout=timeout, what=f"{plural}/{name} to succeed")
    return found


def test_taxonomy_to_tuned_adapter(
    api_client: client.ApiClient, namespace: str, demo: tuple[DemoSettings, DemoState], node: Node
) -> None:
    _, state = demo
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    for body in _manifests(state):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[body["kind"]], body)

    def finished(plural: str, timeout: float) -> dict[str, Any]:
        return _finished(custom, namespace, plural, "demo", timeout)

    taxonomy = finished("taxonomies", 300)
    assert taxonomy["revision"] == state.taxonomy_commit
    assert taxonomy["leafCounts"]["total"] == 3
    assert taxonomy["errorCount"] == 0

    run = finished("syntheticdataruns", 900)
    assert run["taxonomyRevision"] == state.taxonomy_commit
    assert (run["cost"]["leavesGenerated"], run["cost"]["leavesReused"]) == (3, 0)
    assert run["cost"]["promptTokens"] > 0
    for name in ("knowledge", "skills"):
        output = run["outputs"][name]
        path = state.claim_dir / output["uri"].removeprefix("pvc://labtune-artifacts/")
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert output["samples"] == len(records) > 0
        assert output["sha256"] == _sha256(path)
        assert all({"id", "messages", "metadata", "unmask"} <= record.keys() for record in records)
        assert all(m["role"] in ("system", "user", "assistant") for r in records for m in r["messages"])
    # One seed example per leaf held back from the teacher: the knowledge seed's three questions, one
    # per skill leaf.
    held_out = run["outputs"]["evaluation"]
    path = state.claim_dir / held_out["uri"].removeprefix("pvc://labtune-artifacts/")
    questions = [EvalExample.model_validate_json(line) for line in path.read_text().splitlines()]
    assert held_out["samples"] == len(questions) == 5
    assert held_out["sha256"] == _sha256(path)
    assert len({q.leaf for q in questions}) == 3

    job = finished("tuningjobs", 900)
    assert job["lineage"]["taxonomyRevision"] == state.taxonomy_commit
    assert [d["sha256"] for d in job["lineage"]["datasets"]] == [
        run["outputs"][name]["sha256"] for name in ("knowledge", "skills", "evaluation")
    ]
    # Scored after training, in the trainer's pod: the base model and the chosen checkpoint.
    [benchmark] = job["evaluation"]["benchmarks"]
    assert benchmark["name"] == "held-out"
    assert benchmark["examples"] == len(questions)
    assert {"nll", "exactMatch", "contains", "rougeL"} <= benchmark["base"].keys() & benchmark["tuned"].keys()
    # The demo's knowledge leaf is invented facts, trained with their chunks: visibly learnt (5.10 -> 4.20
    # measured), though the held-out seed's questions were never shown to the teacher.
    assert benchmark["tuned"]["nll"] < benchmark["base"]["nll"] - 0.3, benchmark
    assert run["outputs"]["skills"]["sources"].keys() == {"generated", "raft", "auxiliary"}
    assert job["evaluation"]["checkpoint"]["selectedBy"] == "evalLoss"
    assert condition(job, "Evaluated")["reason"] == "Scored"
    summary = state.claim_dir / job["evaluation"]["summary"].removeprefix("pvc://labtune-artifacts/")
    assert EvaluateSummary.model_validate_json(summary.read_text()).benchmarks[0].examples == len(questions)
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
        if e.reason == "Scheduled" and f"to {node.name}" in (e.message or "")
    }
    images = {"generator": "ghcr.io/labtune/generator:0.1.0", "trainer": "ghcr.io/labtune/trainer:0.1.0"}
    for pod in pods:
        assert pod.spec.node_name == node.name
        assert pod.metadata.name in scheduled  # bound by kube-scheduler, not placed by hand
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(node.settings.pod_cidr)
        assert pod.status.phase == "Succeeded"
        assert pod.status.container_statuses[0].image in images.values()  # run by containerd
        assert pod.spec.security_context.run_as_user == 65532
        terminated = pod.status.container_statuses[0].state.terminated
        assert terminated.exit_code == 0
        assert json.loads(terminated.message)  # the summary the operator read


def test_a_second_run_of_the_revision_reuses_every_leaf_from_the_cache(
    api_client: client.ApiClient, namespace: str, demo: tuple[DemoSettings, DemoState]
) -> None:
    """After test_taxonomy_to_tuned_adapter: the same spec into another output, sharded in two pods
    and a mix pod (`parallelism: 2`), takes every leaf from the leaf cache the first run left on the
    claim, asks the teacher nothing and writes the same datasets."""
    _, state = demo
    custom = client.CustomObjectsApi(api_client)
    first = _finished(custom, namespace, "syntheticdataruns", "demo", 60)
    (body,) = [b for b in _manifests(state) if b["kind"] == "SyntheticDataRun"]
    body["metadata"]["name"] = "demo-again"
    body["spec"]["output"] = "pvc://labtune-artifacts/datasets-again"
    body["spec"]["parallelism"] = 2
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "syntheticdataruns", body)
    again = _finished(custom, namespace, "syntheticdataruns", "demo-again", 600)
    nothing_asked = {"leavesGenerated": 0, "leavesReused": 3, "promptTokens": 0, "completionTokens": 0}
    assert again["cost"] == nothing_asked
    for name in ("knowledge", "skills", "evaluation"):
        assert again["outputs"][name]["sha256"] == first["outputs"][name]["sha256"], name
    assert (state.claim_dir / "labtune-cache/leaves").is_dir()
    jobs = client.BatchV1Api(api_client).list_namespaced_job(
        namespace, label_selector="labtune.io/syntheticdatarun=demo-again"
    )
    assert sorted(j.metadata.name for j in jobs.items) == ["demo-again-generate", "demo-again-mix"]
    shards = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector="job-name=demo-again-generate"
    )
    assert sorted(
        p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in shards.items
    ) == ["0", "1"]
    events = client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=demo-again"
    )
    assert any("3 of 3 leaves reused from the leaf cache" in (e.message or "") for e in events.items)


def _tuning_job(name: str, knowledge_epochs: int) -> dict[str, Any]:
    (body,) = [
        b
        for b in (yaml.safe_load(p.read_text()) for p in MANIFESTS.glob("*.yaml"))
        if b["kind"] == "TuningJob"
    ]
    body["metadata"]["name"] = name
    body["spec"]["phases"][0]["epochs"] = knowledge_epochs
    body["spec"]["output"]["uri"] = f"pvc://labtune-artifacts/models/{name}"
    return dict(body)


def test_deleted_trainer_pod_saves_a_checkpoint_and_the_next_pod_resumes(
    api_client: client.ApiClient, namespace: str, demo: tuple[DemoSettings, DemoState], kubeconfig: Path
) -> None:
    """SIGTERM from a pod deletion (as preemption sends it): checkpoint, exit 75, the pod failure policy
    ignores it, the Job's next pod resumes from the checkpoint, the run succeeds with one restart."""
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tuningjobs", _tuning_job("preempt", 8))
    selector = "batch.kubernetes.io/job-name=preempt-train"

    def training() -> client.V1Pod | None:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "tuningjobs", "preempt").get(
            "status"
        )
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        stepped = ((status or {}).get("progress") or {}).get("step", 0) >= 1
        return pods[0] if stepped and pods and pods[0].status.phase == "Running" else None

    first = eventually(training, 600, "the trainer to take its first steps")
    core.delete_namespaced_pod(first.metadata.name, namespace)

    def done() -> dict[str, Any] | None:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "tuningjobs", "preempt").get(
            "status"
        )
        return status if (status or {}).get("state") in ("Succeeded", "Failed") else None

    status = eventually(done, 900, "the resumed run to finish")
    assert status["state"] == "Succeeded", status.get("conditions")
    assert status["restarts"] == 1
    # The deleted pod is gone from the API; its replacement resumed from the checkpoint it saved.
    (second,) = core.list_namespaced_pod(namespace, label_selector=selector).items
    assert second.metadata.name != first.metadata.name
    assert second.status.phase == "Succeeded"
    resumed = core.read_namespaced_pod_log(second.metadata.name, namespace)
    assert "phase knowledge resumes from its checkpoint checkpoint-" in resumed


def _ready_when(
    api_client: client.ApiClient, namespace: str, body: dict[str, Any], reasons: tuple[str, ...]
) -> dict[str, Any]:
    """Creates the resource; returns its Ready condition once False with one of `reasons` (within the
    minute a user waits for an answer)."""
    custom = client.CustomObjectsApi(api_client)
    plural, name = PLURALS[body["kind"]], body["metadata"]["name"]
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)

    def named() -> dict[str, Any] | None:
        resource = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        ready = condition(resource.get("status") or {}, "Ready")
        return ready if ready.get("reason") in reasons and ready.get("status") == "False" else None

    ready: dict[str, Any] = eventually(named, 90, f"{' or '.join(reasons)} on {body['kind']} {name}")
    return ready


def _vllm_teacher_run_is_named(
    api_client: client.ApiClient, namespace: str, state: DemoState, name: str, reasons: tuple[str, ...]
) -> dict[str, Any]:
    """A SyntheticDataRun whose teacher is a vLLM sidecar; its Ready condition once named."""
    (body,) = [b for b in _manifests(state) if b["kind"] == "SyntheticDataRun"]
    body["metadata"]["name"] = name
    body["spec"]["teacher"] = {"model": {"uri": "pvc://labtune-artifacts/models/smollm2-135m-instruct"}}
    body["spec"]["output"] = f"pvc://labtune-artifacts/{name}"
    return _ready_when(api_client, namespace, body, reasons)


def test_an_image_that_cannot_be_pulled_is_named_on_the_resource(
    api_client: client.ApiClient, namespace: str, demo: tuple[DemoSettings, DemoState]
) -> None:
    """A teacher served by a vLLM sidecar whose image is not on the node (and no registry answers)."""
    reasons = ("ErrImagePull", "ImagePullBackOff")
    ready = _vllm_teacher_run_is_named(api_client, namespace, demo[1], "no-image", reasons)
    assert "vllm" in ready["message"]


@pytest.fixture
def crashing_vllm(node: Node) -> Iterator[str]:
    """The vLLM image the operator names, as an image whose server exits at once (busybox `false`)."""
    image = OperatorSettings().vllm_image
    ensure_debian_packages({"busybox-static": BUSYBOX}, "the e2e tests")
    files = {"bin/busybox": BUSYBOX.read_bytes()}
    node.load_image(image_from_files(image, files, ["/bin/busybox", "false"], user="65532:65532"))
    yield image
    node.remove_image(image)  # the pull test expects it absent


def test_a_crash_looping_teacher_is_named_on_the_resource(
    api_client: client.ApiClient, namespace: str, demo: tuple[DemoSettings, DemoState], crashing_vllm: str
) -> None:
    """The vLLM sidecar (restartPolicy Always) exits 1 at every start: kubelet backs off, and the
    SyntheticDataRun says so instead of waiting for a teacher that never answers."""
    ready = _vllm_teacher_run_is_named(api_client, namespace, demo[1], "crash-loop", ("CrashLoopBackOff",))
    assert "teacher" in ready["message"]


def test_a_missing_git_secret_is_named_on_the_taxonomy(
    api_client: client.ApiClient, namespace: str, demo: tuple[DemoSettings, DemoState]
) -> None:
    """The sync pod's Secret volume cannot mount: kubelet says so only in a FailedMount Event."""
    (body,) = [b for b in _manifests(demo[1]) if b["kind"] == "Taxonomy"]
    body["metadata"]["name"] = "no-secret"
    body["spec"]["source"]["git"]["secretRef"]["name"] = "no-such-secret"
    ready = _ready_when(api_client, namespace, body, ("SecretNotFound",))
    assert 'secret "no-such-secret" not found' in ready["message"]


def test_a_missing_claim_is_named_on_the_tuning_job(
    api_client: client.ApiClient, namespace: str, demo: tuple[DemoSettings, DemoState]
) -> None:
    """The trainer pod's output claim does not exist: the scheduler cannot place the pod."""
    body = _tuning_job("no-claim", 1)
    body["spec"]["output"]["uri"] = "pvc://no-such-claim/models/no-claim"
    ready = _ready_when(api_client, namespace, body, ("ClaimNotFound",))
    assert 'persistentvolumeclaim "no-such-claim" not found' in ready["message"]
