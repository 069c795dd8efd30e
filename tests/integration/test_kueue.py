"""Kueue's real controller manager (labtune_dev.kueue) queueing plain batch/v1 Jobs by GPU quota on the
local control plane: one GPU of quota admits one Job at a time, the other waits suspended with its
Workload saying why, and is admitted once the first completes. Also records how Kueue answers a
Job's `spec.suspend` being flipped behind its back (printed; run with -s to read it).

There is no kubelet: a Ready Node object lets the scheduler bind the pods, the test plays the kubelet
(pod status Succeeded, deletion of pods the Job controller deleted).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from kubetest import Kubelet, eventually
from kueuetest import Kueue, condition, gpu_queue

from labtune_dev.kueue import (
    KUEUE_API_VERSION,
    KUEUE_GROUP,
    QUEUE_NAME_LABEL,
    KueueController,
)

TAINT = {"key": "labtune.io/kueue-test", "value": "present", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def kueue_node(api_client: client.ApiClient) -> Iterator[str]:
    """A Ready Node with 8 GPUs, tainted so that only this module's pods land on it."""
    core = client.CoreV1Api(api_client)
    name = f"kueue-node-{uuid.uuid4().hex[:6]}"
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"}
    core.create_node(
        {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {"taints": [TAINT]}}
    )

    def ready() -> dict[str, str]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": stamp}

    core.patch_node_status(
        name, {"status": {"capacity": capacity, "allocatable": capacity, "conditions": [ready()]}}
    )
    stopped = threading.Event()

    def heartbeat() -> None:  # else the node lifecycle controller taints the node after 50 s
        while not stopped.wait(10.0):
            with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
                core.patch_node_status(name, {"status": {"conditions": [ready()]}})

    thread = threading.Thread(target=heartbeat, name="kueue-node-heartbeat", daemon=True)
    thread.start()
    yield name
    stopped.set()
    thread.join()
    core.delete_node(name)


def gpu_job(name: str, queue: str, node: str) -> dict[str, Any]:
    resources = {"cpu": "100m", "memory": "64Mi", "nvidia.com/gpu": "1"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_NAME_LABEL: queue}},
        "spec": {
            "suspend": True,  # what Kueue's (unregistered) defaulting webhook would set
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [{"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.invalid/train:1",
                            "resources": {"requests": resources, "limits": resources},
                        }
                    ],
                }
            },
        },
    }


@pytest.fixture
def queue(
    api_client: client.ApiClient, namespace: str, kueue: KueueController
) -> Iterator[tuple[Kueue, str]]:
    """A ResourceFlavor, a ClusterQueue with 1 GPU of quota and a LocalQueue in the namespace."""
    with gpu_queue(api_client, namespace) as found:
        yield found


def observe(kq: Kueue, job: str, change: Callable[[], None], seconds: float) -> list[str]:
    """What the API server streams for the Job, its pods and Workloads from just before `change` until
    `seconds` after: lines "+0.123s <what>", times from `change`'s start."""
    since = kq.batch.read_namespaced_job(job, kq.namespace).metadata.resource_version
    seen: list[tuple[float, str]] = []
    lock = threading.Lock()

    def job_line(obj: Any) -> str:
        status = obj.status
        return f"Job suspend={obj.spec.suspend} active={status.active} terminating={status.terminating}"

    def pod_line(obj: Any) -> str:
        deleting = " deleting" if obj.metadata.deletion_timestamp else ""
        return f"pod {obj.metadata.name} {obj.status.phase} node={obj.spec.node_name}{deleting}"

    def workload_line(obj: dict[str, Any]) -> str:
        conditions = (obj.get("status") or {}).get("conditions") or []
        return f"Workload {obj['metadata']['name']} " + " ".join(
            f"{c['type']}={c['status']}({c.get('reason', '')})" for c in conditions
        )

    streams: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, str], Callable[[Any], str]]] = [
        (kq.batch.list_namespaced_job, (kq.namespace,), {"field_selector": f"metadata.name={job}"}, job_line),
        (kq.core.list_namespaced_pod, (kq.namespace,), {"label_selector": f"job-name={job}"}, pod_line),
        (
            kq.custom.list_namespaced_custom_object,
            (KUEUE_GROUP, KUEUE_API_VERSION, kq.namespace, "workloads"),
            {},
            workload_line,
        ),
    ]

    def follow(
        list_call: Callable[..., Any], args: tuple[Any, ...], selector: dict[str, str], line: Any
    ) -> None:
        stream = watch.Watch().stream(
            list_call, *args, resource_version=since, timeout_seconds=int(seconds) + 2, **selector
        )
        for event in stream:
            with lock:
                seen.append((time.monotonic(), f"{event['type']} {line(event['object'])}"))

    threads = [threading.Thread(target=follow, args=stream, daemon=True) for stream in streams]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the watches are open
    started = time.monotonic()
    change()
    for thread in threads:
        thread.join()
    with lock:
        return [f"{at - started:+.3f}s {what}" for at, what in sorted(seen) if at < started + seconds]


def test_one_gpu_of_quota_admits_one_job_at_a_time(
    api_client: client.ApiClient, namespace: str, kueue_node: str, queue: tuple[Kueue, str]
) -> None:
    kq, local_queue = queue
    kubelet = Kubelet(api_client, namespace)
    for name in ("train-a", "train-b"):
        kq.batch.create_namespaced_job(namespace, gpu_job(name, local_queue, kueue_node))

    def one_admitted() -> tuple[str, str] | None:
        running = [name for name in ("train-a", "train-b") if not kq.suspended(name)]
        if len(running) > 1:
            pytest.fail(f"both Jobs were unsuspended with 1 GPU of quota: {running}")
        return (running[0], "train-b" if running[0] == "train-a" else "train-a") if running else None

    first, second = eventually(one_admitted, timeout=60, what="Kueue to unsuspend one of the two Jobs")
    assert condition(kq.workload(first), "Admitted") is not None

    def pending_condition() -> dict[str, Any] | None:
        found = condition(kq.workload(second), "QuotaReserved")
        return found if found and found["status"] == "False" else None

    pending = eventually(pending_condition, timeout=30, what=f"the Workload of {second} to say why it waits")
    print(f"\nthe waiting Workload's QuotaReserved: {pending}")
    assert pending["reason"] == "Pending"
    assert "insufficient unused quota for nvidia.com/gpu" in pending["message"]
    time.sleep(3)  # and it stays so
    assert kq.suspended(second)

    # Someone unsuspends the Job Kueue has not admitted: Kueue suspends it again.
    timeline = observe(kq, second, lambda: kq.set_suspend(second, False), seconds=5)
    print(f"{second} (not admitted) patched to suspend=false:\n  " + "\n  ".join(timeline))
    assert kq.suspended(second), "Kueue left a Job it had not admitted running"
    assert (condition(kq.workload(second), "QuotaReserved") or {}).get("status") == "False"
    kq.reap_deleted_pods()

    # The first Job completes: the second is admitted.
    kubelet.finish(first, 0, "done")

    def complete() -> bool | None:
        job = kq.batch.read_namespaced_job(first, namespace)
        done = any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])
        return True if done else None

    eventually(complete, timeout=60, what=f"Job {first} Complete")
    eventually(
        lambda: True if not kq.suspended(second) else None,
        timeout=60,
        what=f"Kueue to unsuspend {second} once {first} completed",
    )
    print(f"{first} completed; {second} admitted; Workload of {first}: {_brief(kq.workload(first))}")

    # Someone suspends the admitted Job: Kueue unsuspends it again, the Workload stays admitted.
    timeline = observe(kq, second, lambda: kq.set_suspend(second, True), seconds=5)
    print(f"{second} (admitted) patched to suspend=true:\n  " + "\n  ".join(timeline))
    eventually(
        lambda: True if not kq.suspended(second) else None,
        timeout=10,
        what=f"Kueue to unsuspend the admitted {second} again",
    )
    assert (condition(kq.workload(second), "Admitted") or {}).get("status") == "True"
    print(f"  Workload afterwards: {_brief(kq.workload(second))}")
    events = kq.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={second}").items
    print(f"Events of Job {second}:\n  " + "\n  ".join(
        f"{e.source.component or e.reporting_component} {e.reason}: {e.message}" for e in events
    ))  # fmt: skip


def _brief(workload: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    conditions = ((workload or {}).get("status") or {}).get("conditions") or []
    return [(c["type"], c["status"], c.get("reason", ""), c.get("message", "")) for c in conditions]
