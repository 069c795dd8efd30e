"""Kueue's objects for tests against the real Kueue controller (labtune_dev.kueue): a queue with one
GPU of quota, the Workloads of Jobs, and the part of the kubelet that deletes pods."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubetest import eventually

from labtune_dev.kueue import KUEUE_API_VERSION, KUEUE_GROUP


class Kueue:
    """Kueue's objects and the Jobs of one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def create(self, plural: str, body: dict[str, Any], *, namespaced: bool = False) -> None:
        body = {"apiVersion": f"{KUEUE_GROUP}/{KUEUE_API_VERSION}", **body}
        if namespaced:
            self.custom.create_namespaced_custom_object(
                KUEUE_GROUP, KUEUE_API_VERSION, self.namespace, plural, body
            )
        else:
            self.custom.create_cluster_custom_object(KUEUE_GROUP, KUEUE_API_VERSION, plural, body)

    def delete(self, plural: str, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.custom.delete_cluster_custom_object(KUEUE_GROUP, KUEUE_API_VERSION, plural, name)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_cluster_custom_object(
            KUEUE_GROUP, KUEUE_API_VERSION, plural, name
        )
        return found

    def workload(self, job: str) -> dict[str, Any] | None:
        """The Workload owned by the Job (Kueue names it job-<name>-<hash>)."""
        listed = self.custom.list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_API_VERSION, self.namespace, "workloads"
        )
        for item in listed["items"]:
            owners = item["metadata"].get("ownerReferences") or []
            if any(o["kind"] == "Job" and o["name"] == job for o in owners):
                found: dict[str, Any] = item
                return found
        return None

    def suspended(self, job: str) -> bool:
        return bool(self.batch.read_namespaced_job(job, self.namespace).spec.suspend)

    def set_suspend(self, job: str, suspend: bool) -> None:
        self.batch.patch_namespaced_job(job, self.namespace, {"spec": {"suspend": suspend}})

    def reap_deleted_pods(self) -> int:
        """Plays the kubelet for pods being deleted: without one, a bound pod stays Terminating."""
        reaped = 0
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            if pod.metadata.deletion_timestamp is not None:
                with contextlib.suppress(ApiException):
                    self.core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
                    reaped += 1
        return reaped


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for found in ((obj or {}).get("status") or {}).get("conditions") or []:
        if found["type"] == kind:
            result: dict[str, Any] = found
            return result
    return None


@contextlib.contextmanager
def gpu_queue(api_client: client.ApiClient, namespace: str) -> Iterator[tuple[Kueue, str]]:
    """A ResourceFlavor, a ClusterQueue with 1 GPU of quota and a LocalQueue in the namespace."""
    kq = Kueue(api_client, namespace)
    suffix = uuid.uuid4().hex[:6]
    flavor, cluster_queue, local_queue = f"flavor-{suffix}", f"gpus-{suffix}", "gpus"
    kq.create("resourceflavors", {"kind": "ResourceFlavor", "metadata": {"name": flavor}})
    quotas = {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    kq.create(
        "clusterqueues",
        {
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": list(quotas),
                        "flavors": [
                            {
                                "name": flavor,
                                "resources": [{"name": k, "nominalQuota": v} for k, v in quotas.items()],
                            }
                        ],
                    }
                ],
            },
        },
    )
    kq.create(
        "localqueues",
        {
            "kind": "LocalQueue",
            "metadata": {"name": local_queue, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
        namespaced=True,
    )

    def active() -> bool | None:
        found = condition(kq.get("clusterqueues", cluster_queue), "Active")
        return True if found and found["status"] == "True" else None

    eventually(active, timeout=30, what=f"ClusterQueue {cluster_queue} Active")
    try:
        yield kq, local_queue
    finally:
        kq.reap_deleted_pods()
        for job in kq.batch.list_namespaced_job(namespace).items:
            with contextlib.suppress(ApiException):
                kq.batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background")
        kq.delete("clusterqueues", cluster_queue)
        kq.delete("resourceflavors", flavor)
