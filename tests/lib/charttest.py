"""Helpers for the chart and Prometheus tests: the chart rendered by the real helm."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/labtune"
# Every optional object on: what a cluster with the prometheus-operator and Grafana would install.
MONITORING = tuple(
    option
    for key in ("serviceMonitor", "podMonitor", "prometheusRule", "dashboard")
    for option in ("--set", f"monitoring.{key}.enabled=true")
)


def helm_template(
    helm: Path, *options: str, release: str = "labtune", namespace: str = "labtune-system"
) -> list[dict[str, Any]]:
    """The manifests `helm template` renders, parsed."""
    command = [str(helm), "template", release, str(CHART), "--namespace", namespace, *options]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one manifest of a kind."""
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} manifests"
    return found[0]


def alert_groups(helm: Path) -> dict[str, Any]:
    """The rule groups of the rendered PrometheusRule: what the prometheus-operator hands Prometheus."""
    spec: dict[str, Any] = only(helm_template(helm, *MONITORING), "PrometheusRule")["spec"]
    return spec
