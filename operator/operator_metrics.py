"""The operator's own Prometheus metrics (namespace `labtune_`, low cardinality: kind, state,
outcome, namespace — never a resource name)."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from labtune.api.tuning_job_types import BenchmarkResult, TuningJobStatus

RECONCILIATIONS = Counter(
    "labtune_reconciliations", "Reconciliations by kind and result (ok, error).", ["kind", "result"]
)
RECONCILE_SECONDS = Histogram(
    "labtune_reconcile_duration_seconds",
    "Time spent in one reconciliation.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_SECONDS = Histogram(
    "labtune_job_duration_seconds",
    "Run time of finished child Jobs by kind and outcome (Succeeded, Failed).",
    ["kind", "outcome"],
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
)
PIPELINE_RUNS = Counter(
    "labtune_labpipeline_runs_stamped", "Runs LabPipelines stamped for new revisions.", ["namespace"]
)
GPU_SECONDS = Counter("labtune_gpu_seconds", "GPU time of finished runs.", ["namespace", "kind"])
IS_LEADER = Gauge(
    "labtune_operator_leader", "1 while this replica reconciles (holds the leader Lease), else 0."
)
LEADERSHIPS = Counter(
    "labtune_operator_leadership_acquired",
    "Times this replica took the leader Lease (summed: leader changes).",
)


class ResourceStates(Collector):
    """`labtune_resources{kind,state}`: how many resources of each kind are in each state, from the
    state each reconciliation last saw."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str, str], str] = {}

    def set(self, kind: str, namespace: str, name: str, state: str) -> None:
        with self._lock:
            self._states[(kind, namespace, name)] = state

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._states.pop((kind, namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            tally = Tally((kind, state) for (kind, _, _), state in self._states.items())
        family = GaugeMetricFamily(
            "labtune_resources", "Resources by kind and state.", labels=["kind", "state"]
        )
        for (kind, state), count in sorted(tally.items()):
            family.add_metric([kind, state], count)
        yield family


RESOURCE_STATES = ResourceStates()
REGISTRY.register(RESOURCE_STATES)


class EvaluationScores(Collector):
    """`labtune_eval_score{namespace,benchmark,metric,model}` (model base or tuned): the scores of
    the TuningJob that finished last in each namespace and benchmark, from status.evaluation — a
    gauge per resource would carry its name; the latest run is what a dashboard compares."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str, str], tuple[datetime, list[BenchmarkResult]]] = {}

    def update(self, body: Mapping[str, Any]) -> None:
        """Records the run's scores when its status has them."""
        if not (body.get("status") or {}).get("evaluation"):
            return  # most events: parse only what has scores
        status = TuningJobStatus.model_validate(body["status"])
        assert status.evaluation is not None
        key = (body["kind"], body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock:
            self._runs[key] = (status.completion_time or _NEVER, status.evaluation.benchmarks)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._runs.pop((kind, namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        latest: dict[tuple[str, str], tuple[datetime, BenchmarkResult]] = {}
        with self._lock:
            for (_, namespace, _), (finished, benchmarks) in self._runs.items():
                for benchmark in benchmarks:
                    key = (namespace, benchmark.name)
                    if key not in latest or finished >= latest[key][0]:
                        latest[key] = (finished, benchmark)
        family = GaugeMetricFamily(
            "labtune_eval_score",
            "Scores of the latest evaluated TuningJob per namespace and benchmark (nll: lower is better).",
            labels=["namespace", "benchmark", "metric", "model"],
        )
        for (namespace, name), (_, benchmark) in sorted(latest.items()):
            for model, scores in (("base", benchmark.base), ("tuned", benchmark.tuned)):
                for metric, value in sorted(scores.to_wire().items()):  # the metrics' names as in status
                    family.add_metric([namespace, name, metric, model], float(value))
        yield family


_NEVER = datetime.min.replace(tzinfo=UTC)


EVALUATION_SCORES = EvaluationScores()
REGISTRY.register(EVALUATION_SCORES)


def serve(port: int) -> None:
    """Serves /metrics of the default registry on a background thread."""
    if port:
        start_http_server(port)
