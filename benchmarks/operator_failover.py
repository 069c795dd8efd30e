"""Leader election: failover time, and the cost of running elected.

On a fresh local control plane (labtune_dev: etcd and kube-apiserver), in one run:

1. failover: two operator processes with leader election at its default timing; five times, the
   leader is SIGKILLed, a TuningJob is created at once, and the time until its status names its Job
   (the standby's first reconcile) is taken; the killed process is started again as the new standby.
   Then five times the same with SIGTERM (a rolling update: the leader gives the Lease up), timed
   from the signal. Prints the medians; target <= 15 s after a SIGKILL.
2. overhead: alternating pairs of one operator process without and with leader election (the same
   process, the Lease renewed every retry period), each, once it reconciles, creating N TuningJobs
   in a fresh namespace and timing until every status names its Job, as `operator_throughput.py`
   does. Prints the median of the per-pair ratios; target <= 1.05.

    python benchmarks/operator_failover.py [--rounds 5] [--count 1000] [--pairs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from operator_throughput import ROOT, Operator, create_all, namespace, tuning_job, wait_named

from labtune.api import GROUP, VERSION
from labtune.operator.settings import LeaderElectionSettings
from labtune_dev.controlplane import ControlPlane

LEASE_NAMESPACE = "bench-lease"
DEFAULTS = LeaderElectionSettings()


def elected(kubeconfig: Path, directory: Path, name: str, namespaces: tuple[str, ...]) -> Operator:
    args = (
        "--leader-election",
        f"--leader-election-namespace={LEASE_NAMESPACE}",
        f"--leader-election-identity={name}",
    )
    return Operator(kubeconfig, directory / f"operator-{name}.log", namespaces, args)


def holder(api: client.ApiClient) -> str | None:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(DEFAULTS.lease_name, LEASE_NAMESPACE)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    identity: str | None = lease.spec.holder_identity
    return identity


def until(probe: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {limit_s:.0f}s")
        time.sleep(0.05)


def first_reconcile(custom: client.CustomObjectsApi, ns: str, name: str) -> None:
    """Creates a TuningJob and returns once its status names its Job."""
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "tuningjobs", tuning_job(name))

    def named() -> bool:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "tuningjobs", name)
        return bool((body.get("status") or {}).get("jobName"))

    until(named, 3 * DEFAULTS.lease_duration, f"TuningJob {name} reconciled")


def failovers(api: client.ApiClient, plane: ControlPlane, rounds: int) -> dict[str, list[float]]:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    namespace(core, LEASE_NAMESPACE)
    ns = namespace(core, "bench-failover")
    replicas = {name: elected(plane.kubeconfig, plane.directory, name, (ns,)) for name in ("a", "b")}
    times: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
    try:
        replicas["a"].start()
        until(lambda: holder(api) == "a", 3 * DEFAULTS.lease_duration, "replica a leads")
        replicas["b"].start()
        for signal_name, stop in (("SIGKILL", Operator.kill), ("SIGTERM", Operator.stop)):
            for index in range(rounds):
                leader = holder(api)
                assert leader in replicas, f"the Lease is held by {leader!r}"
                standby = next(name for name in replicas if name != leader)
                sent = time.monotonic()
                stop(replicas[leader])  # returns once the process has exited
                first_reconcile(custom, ns, f"after-{signal_name.lower()}-{index}")
                times[signal_name].append(time.monotonic() - sent)
                assert holder(api) == standby
                print(f"{signal_name} {index + 1}: {standby} reconciled after {times[signal_name][-1]:.1f}s")
                replicas[leader].start()  # the new standby
                time.sleep(DEFAULTS.retry_period)  # it has read the Lease once
    finally:
        for replica in replicas.values():
            replica.stop()
    return times


def throughput(api: client.ApiClient, operator: Operator, identity: str | None, ns: str, count: int) -> float:
    """Seconds from the first create until `count` TuningJobs name their Job, once the operator
    reconciles (a first TuningJob named its Job: an elected operator took the Lease and started, so
    neither side's timing holds its start-up)."""
    custom = client.CustomObjectsApi(api)
    operator.start()
    try:
        if identity:
            until(lambda: holder(api) == identity, 3 * DEFAULTS.lease_duration, f"{identity} leads")
        first_reconcile(custom, ns, "warm-up")
        bodies: list[dict[str, Any]] = [tuning_job(f"tj-{i}") for i in range(count)]
        started = time.perf_counter()
        create_all(
            bodies,
            lambda b: custom.create_namespaced_custom_object(GROUP, VERSION, ns, "tuningjobs", b),
            16,
        )
        wait_named(api, ns, count + 1)
        return time.perf_counter() - started
    finally:
        operator.stop()


def overhead(api: client.ApiClient, plane: ControlPlane, count: int, pairs: int) -> list[float]:
    core = client.CoreV1Api(api)
    ratios = []
    for pair in range(pairs):
        seconds = {}
        # Alternate which goes first, so that a drift of the machine's speed cancels out.
        for mode in ("off", "on") if pair % 2 == 0 else ("on", "off"):
            ns = namespace(core, f"bench-election-{mode}-{pair}")
            identity = f"solo-{pair}" if mode == "on" else None
            if identity:
                operator = elected(plane.kubeconfig, plane.directory, identity, (ns,))
            else:
                operator = Operator(plane.kubeconfig, plane.directory / f"operator-{ns}.log", (ns,))
            seconds[mode] = throughput(api, operator, identity, ns, count)
        ratios.append(seconds["on"] / seconds["off"])
        print(
            f"pair {pair + 1}: {count} TuningJobs in {seconds['off']:.1f}s without election, "
            f"{seconds['on']:.1f}s with it: ratio {ratios[-1]:.3f}"
        )
    return ratios


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()

    with ControlPlane() as plane:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        api.configuration.connection_pool_maxsize = 16
        ext = client.ApiextensionsV1Api(api)
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        time.sleep(2)  # CRDs established
        times = failovers(api, plane, args.rounds)
        ratios = overhead(api, plane, args.count, args.pairs)

    timing = f"{DEFAULTS.lease_duration}/{DEFAULTS.renew_deadline}/{DEFAULTS.retry_period}s"
    print(f"lease duration / renew deadline / retry period: {timing} (the defaults)")
    for signal_name, seconds in times.items():
        spread = f"{min(seconds):.1f} to {max(seconds):.1f}s"
        print(f"failover after {signal_name}: median {statistics.median(seconds):.1f}s ({spread})")
    print("target: <= 15 s after SIGKILL")
    print(f"leader election overhead: median ratio {statistics.median(ratios):.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
