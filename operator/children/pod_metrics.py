"""Reading a running pod's Prometheus /metrics into plain numbers."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Samples:
    """Metric values by family name (label-less samples), and the label sets of 1-valued
    info-style gauges (e.g. the current phase)."""

    values: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def get(self, name: str) -> float | None:
        return self.values.get(name)

    @classmethod
    def sum(cls, parts: Sequence[Samples]) -> Samples:
        """The values of several pods' parts of one run added up (a sharded run's counts)."""
        values: dict[str, float] = {}
        for part in parts:
            for name, value in part.values.items():
                values[name] = values.get(name, 0.0) + value
        return cls(values)


def parse(text: str) -> Samples:
    values: dict[str, float] = {}
    labels: dict[str, Mapping[str, str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in (family.name, f"{family.name}_total"):
                continue  # histogram buckets, _created and the like
            if sample.labels:
                if sample.value == 1:
                    labels[family.name] = sample.labels
            else:
                # Counters (and untyped samples, by the naming convention) by their base name; a
                # gauge by its own: `labtune_generator_leaves_total` is a gauge, not `…_leaves`.
                counter = family.type in ("counter", "unknown")
                values[family.name.removesuffix("_total") if counter else family.name] = sample.value
    return Samples(values, labels)


def scrape(ip: str, port: int, timeout: float = 3.0) -> Samples:
    """GET http://<ip>:<port>/metrics; OSError (and ValueError on garbage) to the caller."""
    host = f"[{ip}]" if ":" in ip else ip
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
        return parse(response.read().decode())
