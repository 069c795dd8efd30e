"""Pod templates of job pods: the one config file, artifact claims, GPU scheduling, /dev/shm,
secrets as files, and a restricted security context."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from labtune.api.base import SchedulingSpec
from labtune.operator.settings import OperatorSettings

CONFIG_DIR = "/etc/labtune"
CONFIG_FILE = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
MAIN_CONTAINER = "main"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
JOB_UID = 65532
DEFAULT_SHM = "16Gi"


@dataclass(frozen=True)
class FileMount:
    """A Secret or ConfigMap mounted as files (credentials never reach the operator or the
    environment)."""

    source: Literal["secret", "configMap"]
    name: str
    path: str
    items: tuple[tuple[str, str], ...] = ()
    """(key, file name) pairs; every key when empty."""


@dataclass(frozen=True)
class PodRequest:
    """What one job pod needs, independent of the kind that asks for it."""

    component: str
    image: str
    args: tuple[str, ...]
    config_map: str
    scheduling: SchedulingSpec
    gpus: int = 0
    artifact_uris: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    files: tuple[FileMount, ...] = ()
    sidecars: tuple[Mapping[str, Any], ...] = ()
    """Native sidecars: init containers with restartPolicy Always (e.g. a vLLM server)."""
    command: tuple[str, ...] = ("labtune",)
    subdomain: str | None = None
    grace_seconds: int | None = None
    """terminationGracePeriodSeconds: time to save a checkpoint after SIGTERM."""
    annotations: Mapping[str, str] = field(default_factory=dict)


def artifact_claims(uris: Iterable[str]) -> list[str]:
    """PersistentVolumeClaims named by pvc:// URIs, in first-seen order."""
    claims: list[str] = []
    for uri in uris:
        if uri.startswith("pvc://"):
            claim = uri.removeprefix("pvc://").split("/", 1)[0]
            if claim not in claims:
                claims.append(claim)
    return claims


def _volumes(
    req: PodRequest, settings: OperatorSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    shm = req.scheduling.shm_size or DEFAULT_SHM
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": req.config_map}},
        {"name": "tmp", "emptyDir": {}},
        # NCCL and dataloader workers use /dev/shm; the runtime's 64Mi default is far too small.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    for index, claim in enumerate(artifact_claims(req.artifact_uris)):
        volumes.append({"name": f"artifacts-{index}", "persistentVolumeClaim": {"claimName": claim}})
    mounts += artifact_mounts(req.artifact_uris, settings)
    for index, mount in enumerate(req.files):
        source: dict[str, Any] = (
            {"secretName": mount.name, "defaultMode": 0o440}
            if mount.source == "secret"
            else {"name": mount.name}
        )
        if mount.items:
            source["items"] = [{"key": key, "path": path} for key, path in mount.items]
        volumes.append({"name": f"files-{index}", mount.source: source})
        mounts.append({"name": f"files-{index}", "mountPath": mount.path, "readOnly": True})
    return volumes, mounts


def artifact_mounts(uris: Iterable[str], settings: OperatorSettings) -> list[dict[str, Any]]:
    """volumeMounts of the artifact claims, for sidecars that read artifacts too."""
    return [
        {"name": f"artifacts-{index}", "mountPath": f"{settings.artifact_root}/{claim}"}
        for index, claim in enumerate(artifact_claims(uris))
    ]


def _resources(req: PodRequest) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if req.gpus:
        limits[GPU_RESOURCE] = str(req.gpus)
    if req.scheduling.cpu:
        limits["cpu"] = req.scheduling.cpu
    if req.scheduling.memory:
        limits["memory"] = req.scheduling.memory
    return {"limits": limits, "requests": dict(limits)} if limits else {}


def uses_gpus(req: PodRequest) -> bool:
    """Whether any container of the pod (the main one or a sidecar such as vLLM) asks for GPUs."""
    sidecar_limits = [s.get("resources", {}).get("limits", {}) for s in req.sidecars]
    return req.gpus > 0 or any(GPU_RESOURCE in limits for limits in sidecar_limits)


def _affinity(req: PodRequest) -> dict[str, Any] | None:
    if not req.scheduling.gpu_product:
        return None
    term = {
        "matchExpressions": [
            {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [req.scheduling.gpu_product]}
        ]
    }
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _tolerations(req: PodRequest) -> list[dict[str, Any]]:
    tolerations = [t.to_wire() for t in req.scheduling.tolerations]
    if uses_gpus(req):
        tolerations.insert(0, {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def build_pod_template(
    labels: Mapping[str, str], req: PodRequest, settings: OperatorSettings
) -> dict[str, Any]:
    """The pod template of a job pod."""
    volumes, mounts = _volumes(req, settings)
    container: dict[str, Any] = {
        "name": MAIN_CONTAINER,
        "image": req.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(req.command),
        "args": list(req.args),
        "env": [
            {"name": "LABTUNE_CONFIG", "value": CONFIG_PATH},
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *req.env,
        ],
        "ports": [{"name": "metrics", "containerPort": settings.job_metrics_port, "protocol": "TCP"}],
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY,
        # A failed pod with an empty termination log reports its last log lines instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = _resources(req)
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # retries are the Job's, so the pod failure policy sees exit codes
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": JOB_UID,
            "runAsGroup": JOB_UID,
            "fsGroup": JOB_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if req.sidecars:
        spec["initContainers"] = [dict(s) for s in req.sidecars]
    optional = {
        "affinity": _affinity(req),
        "tolerations": _tolerations(req) or None,
        "nodeSelector": dict(req.scheduling.node_selector) or None,
        "priorityClassName": req.scheduling.priority_class_name,
        "runtimeClassName": req.scheduling.runtime_class_name,
        "serviceAccountName": settings.job_service_account,
        "subdomain": req.subdomain,
        "terminationGracePeriodSeconds": req.grace_seconds,
    }
    spec.update({key: value for key, value in optional.items() if value})
    metadata: dict[str, Any] = {"labels": dict(labels)}
    if req.annotations:
        metadata["annotations"] = dict(req.annotations)
    return {"metadata": metadata, "spec": spec}
