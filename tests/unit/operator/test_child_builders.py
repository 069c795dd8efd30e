"""Table-driven tests of the builders of child objects: what the pod template, the Job, the config
ConfigMap, the headless Service and the vLLM sidecar carry for a given request. Pure functions:
no cluster."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from labtune.api.base import BatchSpec, SchedulingSpec
from labtune.api.synthetic_data_run_types import TeacherModel
from labtune.contract.taxonomy_sync import GitCheckout, TaxonomySyncConfig
from labtune.operator.children.job_builders import build_config_map, build_headless_service, build_job
from labtune.operator.children.pod_template import (
    CONFIG_FILE,
    FileMount,
    PodRequest,
    build_pod_template,
)
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run.synthetic_data_run_builders import build_vllm_sidecar

SETTINGS = OperatorSettings()
META = {"name": "r-train", "namespace": "ns"}


def request(**fields: Any) -> PodRequest:
    base: dict[str, Any] = {
        "component": "trainer",
        "image": "trainer:1",
        "args": ("train",),
        "config_map": "r-train",
        "scheduling": SchedulingSpec(),
    }
    return PodRequest(**(base | fields))


def _at(body: Any, path: str) -> Any:
    for part in path.split("."):
        body = body[int(part)] if isinstance(body, list) else body.get(part)
        if body is None:
            return None
    return body


POD_CASES = [
    (
        "no GPUs: no limits, no GPU toleration",
        request(),
        {"spec.containers.0.resources": None, "spec.tolerations": None},
    ),
    (
        "GPUs: limits equal requests, the GPU taint tolerated",
        request(gpus=2),
        {
            "spec.containers.0.resources.limits": {"nvidia.com/gpu": "2"},
            "spec.containers.0.resources.requests": {"nvidia.com/gpu": "2"},
            "spec.tolerations.0.key": "nvidia.com/gpu",
        },
    ),
    (
        "a GPU product becomes required node affinity",
        request(scheduling=SchedulingSpec(gpu_product="NVIDIA-H100-80GB-HBM3")),
        {
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.0"
            ".matchExpressions.0.values": ["NVIDIA-H100-80GB-HBM3"]
        },
    ),
    (
        "each artifact claim is mounted once under the artifact root",
        request(artifact_uris=("pvc://a/x", "pvc://a/y", "pvc://b/z")),
        {
            "spec.volumes.3.persistentVolumeClaim.claimName": "a",
            "spec.volumes.4.persistentVolumeClaim.claimName": "b",
        },
    ),
    (
        "a Secret is mounted read-only as files, never as environment",
        request(files=(FileMount("secret", "git", "/var/run/secrets/git"),)),
        {"spec.volumes.3.secret.secretName": "git", "spec.containers.0.volumeMounts.3.readOnly": True},
    ),
    (
        "a sidecar is an init container",
        request(sidecars=({"name": "teacher", "restartPolicy": "Always"},)),
        {"spec.initContainers.0.name": "teacher"},
    ),
    (
        "restricted security, no retries by the kubelet",
        request(),
        {
            "spec.restartPolicy": "Never",
            "spec.securityContext.runAsNonRoot": True,
            "spec.containers.0.securityContext.readOnlyRootFilesystem": True,
            "spec.containers.0.terminationMessagePolicy": "FallbackToLogsOnError",
        },
    ),
    (
        "a grace period to save a checkpoint",
        request(grace_seconds=300),
        {"spec.terminationGracePeriodSeconds": 300},
    ),
]


@pytest.mark.parametrize(("case", "req", "expected"), POD_CASES, ids=[c[0] for c in POD_CASES])
def test_pod_template(case: str, req: PodRequest, expected: dict[str, Any]) -> None:
    template = build_pod_template({"app": "x"}, req, SETTINGS)
    assert {path: _at(template, path) for path in expected} == expected, case


JOB_CASES = [
    (
        "one pod, batch settings of the owner",
        1,
        BatchSpec(suspend=True, backoff_limit=5),
        {
            "spec.completions": 1,
            "spec.suspend": True,
            "spec.backoffLimit": 5,
            "spec.completionMode": None,
            "spec.podReplacementPolicy": "Failed",
            "spec.podFailurePolicy.rules.0.onExitCodes.values": [78],
        },
    ),
    (
        "several nodes: an Indexed Job, all pods at once",
        4,
        BatchSpec(),
        {
            "spec.completions": 4,
            "spec.parallelism": 4,
            "spec.completionMode": "Indexed",
        },
    ),
    (
        "deadline and TTL",
        1,
        BatchSpec(active_deadline_seconds=60, ttl_seconds_after_finished=30),
        {
            "spec.activeDeadlineSeconds": 60,
            "spec.ttlSecondsAfterFinished": 30,
        },
    ),
]


@pytest.mark.parametrize(
    ("case", "completions", "batch", "expected"), JOB_CASES, ids=[c[0] for c in JOB_CASES]
)
def test_job(case: str, completions: int, batch: BatchSpec, expected: dict[str, Any]) -> None:
    job = build_job(META, {"spec": {}}, batch, completions=completions)
    assert {path: _at(job, path) for path in expected} == expected, case


def test_config_map_holds_the_pod_config_in_camel_case_without_null_fields() -> None:
    config = TaxonomySyncConfig(git=GitCheckout(url="https://example.com/t.git"), manifest="pvc://c/m.json")
    data = yaml.safe_load(build_config_map(META, config)["data"][CONFIG_FILE])
    assert data["git"]["url"] == "https://example.com/t.git"
    assert "branch" not in data["git"]  # unset: left out, not null
    assert data["manifest"] == "pvc://c/m.json"
    assert "artifactRoot" in data
    assert "artifact_root" not in data


def test_headless_service_publishes_pods_before_they_are_ready() -> None:
    service = build_headless_service(META, {"labtune.io/tuningjob": "r"}, 29500)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"] == [{"name": "rendezvous", "port": 29500, "targetPort": 29500}]


@pytest.mark.parametrize(("gpus", "max_len"), [(1, None), (4, 8192)])
def test_vllm_sidecar(gpus: int, max_len: int | None) -> None:
    teacher = TeacherModel(uri="pvc://models/teacher", gpus=gpus, max_model_len=max_len)
    sidecar = build_vllm_sidecar(teacher, SETTINGS)
    args = sidecar["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == str(gpus)
    assert ("--max-model-len" in args) == (max_len is not None)
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar
    assert sidecar["resources"]["limits"] == {"nvidia.com/gpu": str(gpus)}
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/health"
    assert args[args.index("--model") + 1] == "/artifacts/models/teacher"
