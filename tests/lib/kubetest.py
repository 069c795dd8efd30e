"""Helpers for tests against a real API server: waiting, free ports, and a stand-in kubelet."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from labtune.api import GROUP, VERSION

T = TypeVar("T")
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"


def eventually(probe: Callable[[], T | None], timeout: float = 45.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while (result := probe()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class OperatorProcess:
    metrics_port: int
    liveness_port: int
    job_metrics_port: int
    log: Path


class OperatorRunner:
    """`python -m labtune.operator` as a child process that a test may also SIGKILL and start again."""

    def __init__(self, kubeconfig: Path, process: OperatorProcess, args: tuple[str, ...] = ()) -> None:
        self.kubeconfig, self.process, self.args = kubeconfig, process, args
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        process = self.process
        command = [
            sys.executable, "-m", "labtune.operator",
            "--kubeconfig", str(self.kubeconfig),
            "--metrics-port", str(process.metrics_port),
            "--liveness-port", str(process.liveness_port),
            "--job-metrics-port", str(process.job_metrics_port),
            "--scrape-interval", "1",
            "--resync-interval", "5",
            "--generator-image", "labtune/generator:test",
            "--trainer-image", "labtune/trainer:test",
            *self.args,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        with process.log.open("ab") as log:
            self.popen = popen = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=process.log.parent
            )

        def healthy() -> bool | None:
            if popen.poll() is not None:
                pytest.fail(f"operator exited with {popen.returncode}:\n{process.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{process.liveness_port}/healthz", timeout=1
                ) as r:
                    return True if r.status == 200 else None
            except OSError:
                return None

        eventually(healthy, timeout=60, what="the operator's /healthz")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finishing of what is in flight."""
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()


class Kubelet:
    """Plays the kubelet's part for the pods of one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def pods(self, job: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={job}").items)

    def pod(self, job: str) -> Any:
        return eventually(lambda: next(iter(self.pods(job)), None), what=f"a pod of Job {job}")

    def indexed_pods(self, job: str, index: int) -> list[Any]:
        """The pods of one completion index of an Indexed Job, oldest first."""
        found = [
            p
            for p in self.pods(job)
            if (p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index") == str(index)
        ]
        return sorted(found, key=lambda p: p.metadata.creation_timestamp)

    def _status(self, pod: Any, phase: str, main: dict[str, Any], ip: str = "127.0.0.1") -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "phase": phase,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": stamp,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if phase == "Running" else "False",
                    "lastTransitionTime": stamp,
                }
            ],
            "containerStatuses": [
                {
                    "name": "main",
                    "image": "x",
                    "imageID": "",
                    "ready": phase == "Running",
                    "restartCount": 0,
                    "state": main,
                }
            ],
        }
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, {"status": status})

    def run(self, job: str) -> Any:
        return self.run_pod(self.pod(job))

    def run_pod(self, pod: Any, ip: str = "127.0.0.1") -> Any:
        """The pod running on `ip` (a loopback address of its own, for its /metrics)."""
        started = {"running": {"startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
        self._status(pod, "Running", started, ip)
        return pod

    def finish(self, job: str, exit_code: int, message: str) -> None:
        self.finish_pod(self.pod(job), exit_code, message)

    def finish_pod(self, pod: Any, exit_code: int, message: str, ip: str = "127.0.0.1") -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": stamp,
            "finishedAt": stamp,
        }
        self._status(pod, "Succeeded" if exit_code == 0 else "Failed", {"terminated": terminated}, ip)


class Cluster:
    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> None:
        plural = {
            "TuningJob": "tuningjobs",
            "SyntheticDataRun": "syntheticdataruns",
            "Taxonomy": "taxonomies",
            "LabPipeline": "labpipelines",
        }
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural[body["kind"]], body
        )

    def get(self, plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name
        )
        return found

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name, patch)

    def status_when(
        self, plural: str, name: str, predicate: Any, what: str, timeout: float = 45
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.get(plural, name).get("status") or {}
            return status if predicate(status) else None

        return eventually(probe, timeout=timeout, what=f"{plural}/{name}: {what}")

    def job(self, name: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            jobs = self.batch.list_namespaced_job(self.namespace, _preload_content=False)
            found = [j for j in json.loads(jobs.data)["items"] if j["metadata"]["name"] == name]
            return found[0] if found else None

        return eventually(probe, what=f"Job {name}")

    def claims(self, *names: str) -> None:
        """Bound PersistentVolumeClaims (on hostPath volumes) so that the scheduler can place pods."""
        for claim in names:
            volume = f"{self.namespace}-{claim}"
            self.core.create_persistent_volume(
                {
                    "metadata": {"name": volume},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteMany"],
                        "storageClassName": "manual",
                        "hostPath": {"path": f"/tmp/{volume}"},
                        "claimRef": {"namespace": self.namespace, "name": claim},
                    },
                }
            )
            self.core.create_namespaced_persistent_volume_claim(
                self.namespace,
                {
                    "metadata": {"name": claim},
                    "spec": {
                        "accessModes": ["ReadWriteMany"],
                        "storageClassName": "manual",
                        "volumeName": volume,
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                },
            )

    def events(self, name: str) -> list[Any]:
        """The Events about `name`, in the order they were created."""
        found = [
            e for e in self.core.list_namespaced_event(self.namespace).items if e.involved_object.name == name
        ]
        return sorted(found, key=lambda e: int(e.metadata.resource_version))


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def tuning_job(name: str, **spec: Any) -> dict[str, Any]:
    """A TuningJob on dataset URIs (so it starts at once) with no GPUs; `spec` keys override."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuningJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "pvc://models/smollm2"},
            "data": {"knowledge": "pvc://data/k.jsonl", "skills": "pvc://data/s.jsonl"},
            "resources": {"gpusPerNode": 0},
        },
    }
    body["spec"].update(spec)
    return body
