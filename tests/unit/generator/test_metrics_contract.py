"""The generator serves the metric names the operator reads (labtune.contract.metric_names)."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from labtune.contract import metric_names as names
from labtune.generator.generator_metrics import GeneratorMetrics


def test_the_operator_reads_what_the_generator_serves() -> None:
    metrics = GeneratorMetrics()
    metrics.leaves_total.set(3)
    metrics.leaves_done.set(1)
    metrics.samples_generated.inc(7)
    metrics.samples_kept.inc(5)
    served = {
        sample.name: sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
    assert served[names.GENERATE_LEAVES_TOTAL] == 3
    assert served[names.GENERATE_LEAVES_DONE] == 1
    assert served[f"{names.GENERATE_SAMPLES_GENERATED}_total"] == 7
    assert served[f"{names.GENERATE_SAMPLES_KEPT}_total"] == 5
