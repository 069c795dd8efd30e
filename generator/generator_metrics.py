"""Prometheus metrics of a generation run, served on /metrics while it runs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from labtune.contract import metric_names as names
from labtune.contract.common import metrics_port_error

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GeneratorMetrics:
    """The run's metrics on a registry of their own (several runs may share a process in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.leaves_total = Gauge(names.GENERATE_LEAVES_TOTAL, "Leaves to generate for", registry=r)
        self.leaves_done = Gauge(names.GENERATE_LEAVES_DONE, "Leaves finished", registry=r)
        self.samples_in = Counter(
            "labtune_generator_stage_input_samples",
            "Samples entering a pipeline stage",
            ["stage"],
            registry=r,
        )
        self.samples_out = Counter(
            "labtune_generator_stage_output_samples",
            "Samples leaving a pipeline stage",
            ["stage"],
            registry=r,
        )
        self.samples_generated = Counter(
            names.GENERATE_SAMPLES_GENERATED, "Samples the pipelines produced", registry=r
        )
        self.samples_kept = Counter(
            names.GENERATE_SAMPLES_KEPT, "Samples that passed every filter", registry=r
        )
        self.requests = Counter(
            "labtune_generator_teacher_requests", "Teacher requests by outcome", ["outcome"], registry=r
        )
        self.latency = Histogram(
            "labtune_generator_teacher_request_seconds",
            "Teacher request latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "labtune_generator_teacher_tokens", "Teacher tokens by direction", ["direction"], registry=r
        )
        self.leaves_reused = Counter(
            "labtune_generator_leaves_reused", "Leaves whose samples came from the leaf cache", registry=r
        )
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.errors = Counter(
            "labtune_generator_errors", "Dropped or failed items by kind", ["kind"], registry=r
        )

    def record_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens.labels("in").inc(prompt_tokens)
        self.tokens.labels("out").inc(completion_tokens)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def serve(self, port: int) -> None:
        """Serves /metrics on `port` in a daemon thread (0: not at all); a port that cannot be
        bound (in use) is a ConfigError."""
        if port:
            try:
                start_http_server(port, registry=self.registry)
            except OSError as error:
                raise metrics_port_error(port, error) from None
