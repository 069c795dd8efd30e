"""Operator throughput against a raw client baseline, and crash safety.

On a fresh local control plane (labtune.devcluster), in one run:

1. operator: create N TuningJobs (dataset URIs, so they start at once) at concurrency C and time
   until every child Job exists and every TuningJob's status names it;
2. baseline: create N Jobs directly with the kubernetes client at the same concurrency C;
3. crash: create N more TuningJobs, SIGKILL the operator half-way, start it again, wait until
   every TuningJob has its Job, and count duplicate children.

Prints the time ratio (operator / baseline), the operator's peak RSS and CPU seconds, and the
duplicate count. Targets: ratio <= 1.3, RSS <= 200 MB, 0 duplicates.

    python benchmarks/operator_throughput.py [--count 1000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from labtune.api import GROUP, VERSION
from labtune.devcluster.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tuning_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TuningJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "pvc://models/base"},
            "data": {"knowledge": "pvc://data/k.jsonl", "skills": "pvc://data/s.jsonl"},
            "resources": {"gpusPerNode": 1},
        },
    }


def plain_job(name: str) -> dict[str, Any]:
    container = {"name": "main", "image": "trainer", "command": ["true"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }


class Operator:
    """The operator as a process, with its peak RSS and CPU time read from /proc."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self.liveness = free_port()
        self.peak_rss_kb = 0
        self.cpu_s = 0.0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "labtune.operator", "--kubeconfig", str(self.kubeconfig),
            "--metrics-port", "0", "--liveness-port", str(self.liveness), "--resync-interval", "600",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"operator did not become healthy; see {self.log}")

    def sample(self) -> None:
        assert self.process is not None
        pid = self.process.pid
        status = Path(f"/proc/{pid}/status").read_text()
        self.peak_rss_kb = max(self.peak_rss_kb, int(status.split("VmHWM:")[1].split()[0]))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        self.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def create_all(bodies: list[dict[str, Any]], create: Any, concurrency: int) -> None:
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, bodies))


def namespace(core: client.CoreV1Api, name: str) -> str:
    core.create_namespace({"metadata": {"name": name}})
    return name


def count_done(
    custom: client.CustomObjectsApi, batch: client.BatchV1Api, ns: str
) -> tuple[int, int, Counter[str]]:
    """(TuningJobs whose status names their Job, Jobs, Jobs per owner)."""
    jobs = json.loads(batch.list_namespaced_job(ns, _preload_content=False).data)["items"]
    owners = Counter(j["metadata"]["labels"].get("labtune.io/tuningjob", "") for j in jobs)
    items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "tuningjobs")["items"]
    named = sum(1 for t in items if (t.get("status") or {}).get("jobName"))
    return named, len(jobs), owners


def wait_all(
    api: client.ApiClient, ns: str, count: int, operator: Operator, stop_at: int | None = None
) -> None:
    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    while True:
        operator.sample()
        named, jobs, _ = count_done(custom, batch, ns)
        if stop_at is not None and jobs >= stop_at:
            return
        if named >= count and jobs >= count:
            return
        time.sleep(0.2)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n, c = args.count, args.concurrency

    with ControlPlane() as plane:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        api.configuration.connection_pool_maxsize = c
        ext, core = client.ApiextensionsV1Api(api), client.CoreV1Api(api)
        custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        time.sleep(2)  # CRDs established
        operator = Operator(plane.kubeconfig, plane.directory / "operator.log")
        operator.start()
        try:
            ns = namespace(core, "bench-operator")
            started = time.perf_counter()
            create_all(
                [tuning_job(f"tj-{i}") for i in range(n)],
                lambda b: custom.create_namespaced_custom_object(GROUP, VERSION, ns, "tuningjobs", b),
                c,
            )
            wait_all(api, ns, n, operator)
            operator_s = time.perf_counter() - started
            operator_cpu_s = operator.cpu_s

            ns_base = namespace(core, "bench-baseline")
            started = time.perf_counter()
            create_all(
                [plain_job(f"job-{i}") for i in range(n)],
                lambda b: batch.create_namespaced_job(ns_base, b, _preload_content=False),
                c,
            )
            baseline_s = time.perf_counter() - started

            ns_crash = namespace(core, "bench-crash")
            bodies = [tuning_job(f"tj-{i}") for i in range(n)]
            with ThreadPoolExecutor(1) as creator:
                creating = creator.submit(
                    create_all,
                    bodies,
                    lambda b: custom.create_namespaced_custom_object(
                        GROUP, VERSION, ns_crash, "tuningjobs", b
                    ),
                    c,
                )
                wait_all(api, ns_crash, n, operator, stop_at=n // 2)
                operator.kill()
                creating.result()
            operator.start()
            wait_all(api, ns_crash, n, operator)
            _, jobs, owners = count_done(custom, batch, ns_crash)
            duplicates = jobs - len(owners)
        finally:
            operator.stop()

    print(f"TuningJobs: {n}, concurrency: {c}")
    print(
        f"operator: {operator_s:.1f}s until every Job exists and its status says so ({n / operator_s:.0f}/s)"
    )
    print(f"baseline: {baseline_s:.1f}s to create the Jobs directly ({n / baseline_s:.0f}/s)")
    print(f"ratio operator/baseline: {operator_s / baseline_s:.2f} (target <= 1.3)")
    rss_mb = operator.peak_rss_kb / 1024
    print(f"operator peak RSS: {rss_mb:.0f} MB (target <= 200), CPU: {operator_cpu_s:.1f}s for the first {n}")
    print(f"after SIGKILL half-way and restart: {jobs} Jobs for {n} TuningJobs, duplicates: {duplicates}")


if __name__ == "__main__":
    main()
