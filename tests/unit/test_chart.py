"""The chart's alert rules and dashboard use only metrics that labtune serves, and its Argo CD snippet
carries its health scripts as they are (no helm needed: all are plain files under
charts/labtune/files/ that the templates embed as they are)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.registry import CollectorRegistry

from labtune.api import KINDS
from labtune.contract import metric_names as contract
from labtune.operator import operator_metrics
from labtune_dev import argocd_health

FILES = Path(__file__).resolve().parents[2] / "charts/labtune/files"
_METRIC = re.compile(r"\blabtune_[a-z0-9_]+\b")
# Series names a metric family is served as, by its type (the Prometheus text format).
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# The contract's counters (its comments say "served with _total"); every other name is a gauge.
_CONTRACT_COUNTERS = {contract.GENERATE_SAMPLES_GENERATED, contract.GENERATE_SAMPLES_KEPT}


def operator_series() -> set[str]:
    names = set()
    for collector in vars(operator_metrics).values():
        # Every collector object of the module (metrics and custom collectors), not its classes.
        if isinstance(collector, type | CollectorRegistry):
            continue
        if callable(getattr(collector, "collect", None)):
            for family in collector.collect():
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def job_pod_series() -> set[str]:
    names = {value for key, value in vars(contract).items() if key.isupper() and isinstance(value, str)}
    return {name + "_total" if name in _CONTRACT_COUNTERS else name for name in names}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((FILES / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> Iterator[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            yield from (target["expr"] for target in panel.get("targets", []))
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads((FILES / "dashboard.json").read_text())["panels"])


def test_served_names_are_known() -> None:
    # A sanity check of the name expansion the tests below rely on.
    operator = operator_series()
    assert {"labtune_reconciliations_total", "labtune_reconcile_duration_seconds_bucket"} <= operator
    assert "labtune_resources" in operator
    assert {"labtune_train_step", "labtune_generator_samples_kept_total"} <= job_pod_series()


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_used_is_served(source: str) -> None:
    queries = [rule["expr"] for rule in alert_rules()] if source == "alerts" else list(dashboard_queries())
    used = {name for query in queries for name in _METRIC.findall(query)}
    assert used, f"no labtune metric found in the {source}"
    assert used <= operator_series() | job_pod_series()


def test_dashboard_shows_every_metric() -> None:
    used = {name for query in dashboard_queries() for name in _METRIC.findall(query)}
    # A histogram counts as shown when one of its series is.
    missing = {name for name in operator_series() | job_pod_series() if name not in used}
    histograms = {name.rsplit("_", 1)[0] for name in used if name.endswith(("_bucket", "_sum", "_count"))}
    assert {name for name in missing if name.rsplit("_", 1)[0] not in histograms} == set()


def test_alerts_are_documented() -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_dashboard_queries_use_the_datasource_variable() -> None:
    dashboard = json.loads((FILES / "dashboard.json").read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)


def test_the_argocd_snippet_carries_the_health_scripts_as_they_are() -> None:
    snippet = argocd_health.SNIPPET
    # Rewrite it with: python -c 'from labtune_dev.argocd_health import write_snippet; write_snippet()'
    assert snippet.read_text() == argocd_health.render_snippet(), f"{snippet} drifted from the .lua files"
    patch = yaml.safe_load(snippet.read_text())
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    scripts = argocd_health.scripts()
    assert patch["data"] == {argocd_health.config_key(kind): text for kind, text in scripts.items()}
    assert sorted(scripts) == sorted(kind.kind_name() for kind in KINDS)  # one per kind
