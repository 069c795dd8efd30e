"""Operator throughput against a raw client baseline, and crash safety.

On a fresh local control plane (labtune_dev: etcd and kube-apiserver, no controller-manager,
so no phase is slowed by the Job controller making pods), in one run, each phase in its own
namespace and at the same client concurrency C:

1. baseline: create N Jobs directly with the kubernetes client — the Job the operator would make
   for each TuningJob (built by the operator's own builders, without the owner reference): what a
   user without the operator submits for the same training;
2. references: N minimal Jobs (one container, `true`); N TuningJobs alone (nothing watches them);
   then, per item, the writes the operator makes for a TuningJob (the TuningJob, its ConfigMap, its
   Job, the status naming the Job) made directly with the client — the floor for any operator that
   makes those writes;
3. operator: create N TuningJobs (dataset URIs, so they start at once) and time until every
   TuningJob's status names its Job (watched, not polled), then check that exactly N Jobs exist;
4. crash: create N more TuningJobs, SIGKILL the operator once half of them name their Job, start it
   again, wait until every TuningJob names its Job, and count duplicate children.

The operator watches only the namespaces of phases 3 and 4. Prints the ratios to the baseline, the
CPU seconds the API server and etcd spent in each phase (on a small machine they, not the client or
the operator, set the pace), the operator's peak RSS (per process) and CPU seconds in phase 3, the
duplicate count and the load average. Targets: ratio <= 1.3, RSS <= 200 MB, 0 duplicates.

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
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch

from labtune.api import GROUP, VERSION, TuningJob
from labtune.contract.train import Datasets
from labtune.operator.settings import OperatorSettings
from labtune.operator.tuning_job.tuning_job_builders import build_trainer_plan
from labtune_dev.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes so far (from /proc)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


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


def operator_children(name: str, ns: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ConfigMap and Job the operator makes for tuning_job(name), without the owner reference:
    what a user would create directly for the same training."""
    body = {**tuning_job(name), "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"}}
    resource = TuningJob.model_validate(body)
    datasets = Datasets(knowledge=resource.spec.data.knowledge, skills=resource.spec.data.skills)
    _, children = build_trainer_plan(body, resource, datasets, resource.spec.evaluation, OperatorSettings())
    config_map, job = (
        {**child, "metadata": {k: v for k, v in child["metadata"].items() if k != "ownerReferences"}}
        for child in children
    )
    return config_map, job


def plain_job(name: str) -> dict[str, Any]:
    container = {"name": "main", "image": "trainer", "command": ["true"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }


class Operator:
    """The operator as a process, with its peak RSS (the kernel's high-water mark) and CPU time read
    from /proc by a sampling thread."""

    def __init__(
        self, kubeconfig: Path, log: Path, namespaces: tuple[str, ...], args: tuple[str, ...] = ()
    ) -> None:
        self.kubeconfig, self.log, self.namespaces, self.args = kubeconfig, log, namespaces, args
        self.liveness = free_port()
        self.peak_rss_kb: list[int] = []  # per process started
        self.cpu_s = 0.0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "labtune.operator", "--kubeconfig", str(self.kubeconfig),
            "--metrics-port", "0", "--liveness-port", str(self.liveness), "--resync-interval", "600",
            *(f"--namespace={ns}" for ns in self.namespaces), *self.args,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.peak_rss_kb.append(0)
        threading.Thread(target=self._sample_until_exit, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        tail = self.log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError("operator did not become healthy in 60 s; its log ends:\n" + "\n".join(tail))

    def _sample_until_exit(self, process: subprocess.Popen[bytes]) -> None:
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                cpu = cpu_seconds([process.pid])
            except OSError:
                return  # exited between the check and the read
            if "VmHWM:" not in status:
                return  # a zombie: killed, not yet reaped
            self.peak_rss_kb[-1] = max(self.peak_rss_kb[-1], int(status.split("VmHWM:")[1].split()[0]))
            self.cpu_s = cpu
            time.sleep(0.1)

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


def wait_named(api: client.ApiClient, ns: str, count: int, limit_s: float = 300) -> None:
    """Returns once `count` TuningJobs name their Job in status. Watch streams rather than polled
    lists, so that measuring loads the API server little; each stream ends after a few seconds and
    the next starts with the current state, so that a stalled stream cannot hang the benchmark."""
    custom = client.CustomObjectsApi(api)
    named: set[str] = set()
    deadline = time.monotonic() + limit_s
    while len(named) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(named)} of {count} TuningJobs name their Job after {limit_s:.0f}s")
        stream = watch.Watch()
        events = stream.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, ns, "tuningjobs", timeout_seconds=10
        )
        for event in events:
            body = event["object"]
            if (body.get("status") or {}).get("jobName"):
                named.add(body["metadata"]["name"])
            if len(named) >= count:
                stream.stop()


def same_writes(
    api: client.ApiClient, ns: str, name: str, config_map: dict[str, Any], job: dict[str, Any]
) -> None:
    """The writes the operator makes for one TuningJob, made directly by a client: the TuningJob
    itself, its ConfigMap, its Job (built beforehand), and the status that names the Job."""
    custom, core, batch = client.CustomObjectsApi(api), client.CoreV1Api(api), client.BatchV1Api(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "tuningjobs", tuning_job(name))
    core.create_namespaced_config_map(ns, config_map, _preload_content=False)
    batch.create_namespaced_job(ns, job, _preload_content=False)
    status = {"status": {"jobName": f"{name}-train", "state": "Pending"}}
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, "tuningjobs", name, status, _preload_content=False
    )


def children(api: client.ApiClient, ns: str) -> tuple[int, int]:
    """(Jobs, TuningJobs owning at least one of them)."""
    found = client.BatchV1Api(api).list_namespaced_job(ns, _preload_content=False)
    jobs = json.loads(found.data)["items"]
    owners = Counter(j["metadata"]["labels"].get("labtune.io/tuningjob", "") for j in jobs)
    return len(jobs), len(owners)


class Phases:
    """Wall seconds and the CPU seconds of the API server and etcd, and of this client, per phase."""

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids
        self.wall: dict[str, float] = {}
        self.server_cpu: dict[str, float] = {}
        self.client_cpu: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        wall, server, client_cpu = time.perf_counter(), cpu_seconds(self.server_pids), time.process_time()
        yield
        self.wall[name] = time.perf_counter() - wall
        self.server_cpu[name] = cpu_seconds(self.server_pids) - server
        self.client_cpu[name] = time.process_time() - client_cpu

    def line(self, name: str, what: str, baseline: str = "baseline") -> str:
        wall = self.wall[name]
        return (
            f"{what}: {wall:.1f}s, ratio {wall / self.wall[baseline]:.2f}; "
            f"API server + etcd CPU {self.server_cpu[name]:.1f}s, "
            f"this client's CPU {self.client_cpu[name]:.1f}s"
        )


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
        phases = Phases(list(plane.pids.values()))

        def create_jobs(ns: str, bodies: list[dict[str, Any]]) -> None:
            create_all(bodies, lambda b: batch.create_namespaced_job(ns, b, _preload_content=False), c)

        def create_tuning_jobs(ns: str) -> None:
            create_all(
                [tuning_job(f"tj-{i}") for i in range(n)],
                lambda b: custom.create_namespaced_custom_object(GROUP, VERSION, ns, "tuningjobs", b),
                c,
            )

        # The operator watches only its two namespaces: the reference phases' TuningJobs are not its.
        namespaces = ("bench-operator", "bench-crash")
        operator = Operator(plane.kubeconfig, plane.directory / "operator.log", namespaces)
        operator.start()
        try:
            # No kube-controller-manager runs: neither phase is slowed by the Job controller making
            # pods, and the operator, which watches only labtune's Jobs, idles during the baseline.
            ns_base = namespace(core, "bench-baseline")
            bodies = [operator_children(f"tj-{i}", ns_base)[1] for i in range(n)]
            with phases.measure("baseline"):
                create_jobs(ns_base, bodies)

            ns_minimal = namespace(core, "bench-minimal-jobs")
            with phases.measure("minimal"):
                create_jobs(ns_minimal, [plain_job(f"job-{i}") for i in range(n)])

            ns_alone = namespace(core, "bench-tuningjobs-alone")
            with phases.measure("alone"):
                create_tuning_jobs(ns_alone)

            ns_same = namespace(core, "bench-same-writes")
            items = [(f"tj-{i}", *operator_children(f"tj-{i}", ns_same)) for i in range(n)]
            with phases.measure("same"):
                create_all(items, lambda item: same_writes(api, ns_same, *item), c)

            ns = namespace(core, namespaces[0])
            cpu_before = operator.cpu_s
            with phases.measure("operator"):
                create_tuning_jobs(ns)
                wait_named(api, ns, n)
            operator_cpu_s = operator.cpu_s - cpu_before
            jobs, owners = children(api, ns)
            assert (jobs, owners) == (n, n), f"{jobs} Jobs for {owners} of {n} TuningJobs"

            ns_crash = namespace(core, namespaces[1])
            with ThreadPoolExecutor(1) as creator:
                creating = creator.submit(create_tuning_jobs, ns_crash)
                wait_named(api, ns_crash, n // 2)
                operator.kill()
                creating.result()
            operator.start()
            wait_named(api, ns_crash, n)
            jobs, owners = children(api, ns_crash)
            duplicates = jobs - owners
        finally:
            operator.stop()

    operator_s, baseline_s = phases.wall["operator"], phases.wall["baseline"]
    print(f"TuningJobs: {n}, concurrency: {c}")
    print(phases.line("operator", "operator: until every Job exists and its status says so"))
    print(phases.line("baseline", "baseline: the same Jobs created directly"))
    print(f"ratio operator/baseline: {operator_s / baseline_s:.2f} (target <= 1.3)")
    print(phases.line("minimal", "minimal Jobs (one container) created directly"))
    print(phases.line("alone", "the TuningJobs alone, created by a client"))
    print(phases.line("same", "the operator's writes (TuningJob, ConfigMap, Job, status) made by a client"))
    print(f"operator / those writes: {operator_s / phases.wall['same']:.2f}")
    first, restarted = (kb / 1024 for kb in operator.peak_rss_kb)
    print(
        f"operator peak RSS: {max(first, restarted):.0f} MB (target <= 200): "
        f"{first:.0f} MB through the first {n}, {restarted:.0f} MB after the restart "
        f"(listing {n} + {n} TuningJobs and their Jobs at once); "
        f"CPU: {operator_cpu_s:.1f}s for the first {n}"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs")
    print(f"after SIGKILL half-way and restart: {jobs} Jobs for {n} TuningJobs, duplicates: {duplicates}")


if __name__ == "__main__":
    main()
