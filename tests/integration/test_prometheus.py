"""The chart's alert rules and dashboard against real Prometheus tools: `promtool check rules` and
`promtool test rules` (alerts_test.yaml: the alerts fire, and stay quiet, on synthetic series), and a
real Prometheus scraping a running operator — started with the chart's Deployment arguments against
the local control plane — where every dashboard and alert expression evaluates and the key ones
return data once a TuningJob has been reconciled."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from charttest import CHART, alert_groups, helm_template, only
from kubernetes import client
from kubetest import Cluster, eventually, free_port

from labtune_dev.tools import Tools

ALERTS_TEST = Path(__file__).with_name("alerts_test.yaml")
# Grafana's variables in the dashboard's queries, as Grafana would fill them in for a 1s scrape.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}
# Dashboard queries that must return data once the operator has reconciled a TuningJob (the others
# need job pods, finished runs or GPU time).
KEY_QUERIES = (
    'sum(up{job="labtune-operator"})',
    "sum by (kind, result) (rate(labtune_reconciliations_total[$__rate_interval]))",
    "histogram_quantile(0.99, sum by (kind, le) "
    "(rate(labtune_reconcile_duration_seconds_bucket[$__rate_interval])))",
    "sum by (kind, state) (labtune_resources)",
)


def _rules_file(tools: Tools, folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(alert_groups(tools.helm)))
    return path


def _promtool(tools: Tools, *args: str, cwd: Path) -> str:
    result = subprocess.run([tools.promtool, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_checks_the_rendered_rules(tools: Tools, tmp_path: Path) -> None:
    rules = _rules_file(tools, tmp_path)
    count = sum(len(group["rules"]) for group in alert_groups(tools.helm)["groups"])
    assert f"SUCCESS: {count} rules found" in _promtool(tools, "check", "rules", str(rules), cwd=tmp_path)


def test_promtool_unit_tests_of_the_alerts(tools: Tools, tmp_path: Path) -> None:
    _rules_file(tools, tmp_path)
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    assert "SUCCESS" in _promtool(tools, "test", "rules", ALERTS_TEST.name, cwd=tmp_path)


def test_every_alert_has_a_firing_test_case(tools: Tools) -> None:
    alerts = {rule["alert"] for group in alert_groups(tools.helm)["groups"] for rule in group["rules"]}
    cases = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {case["alertname"] for test in cases for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == alerts


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query; fails the test on a parse or evaluation error."""
        body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def get(self, path: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                body: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as error:  # a bad query is a 400 with the error in the body
            body = json.load(error)
        return body


@pytest.fixture(scope="module")
def operator_metrics(
    tools: Tools, kubeconfig: Path, labtune_crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """`labtune operator run` (the operator image's entry point) with the chart's Deployment
    arguments, on local ports and the admin kubeconfig; yields its metrics port."""
    folder = tmp_path_factory.mktemp("operator")
    args = only(helm_template(tools.helm), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    port = free_port()
    # Later options win: local ports instead of the pod's, and a kubeconfig instead of in-cluster config.
    local = [f"--metrics-port={port}", f"--liveness-port={free_port()}", f"--kubeconfig={kubeconfig}"]
    labtune = Path(sys.executable).parent / "labtune"
    with (folder / "operator.log").open("wb") as log:
        process = subprocess.Popen(
            [labtune, "operator", "run", *args, *local], stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
    try:
        yield port
        assert process.poll() is None, f"the operator exited: {(folder / 'operator.log').read_text()[-3000:]}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def prometheus(
    tools: Tools, operator_metrics: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """A real Prometheus scraping the operator every second, with the chart's alert rules loaded.
    job="labtune-operator" is what the chart's ServiceMonitor gives the operator's series."""
    folder = tmp_path_factory.mktemp("prometheus")
    target = f"127.0.0.1:{operator_metrics}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(_rules_file(tools, folder))],
        "scrape_configs": [{"job_name": "labtune-operator", "static_configs": [{"targets": [target]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    command = [
        str(tools.prometheus),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={address}",
    ]
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = Prometheus(f"http://{address}")

    def ready() -> bool | None:
        assert process.poll() is None, (folder / "prometheus.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(server.url + "/-/ready", timeout=1) as response:
                return True if response.status == 200 else None
        except OSError:
            return None

    try:
        eventually(ready, timeout=60, what="Prometheus /-/ready")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def reconciled(api_client: client.ApiClient, prometheus: Prometheus) -> Iterator[Prometheus]:
    """A TuningJob (with dataset URIs, so it starts at once), reconciled, as Prometheus sees it."""
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    Cluster(api_client, namespace).create(
        {
            "apiVersion": "labtune.io/v1alpha1",
            "kind": "TuningJob",
            "metadata": {"name": "scraped"},
            "spec": {
                "baseModel": {"uri": "pvc://models/smollm2"},
                "data": {"knowledge": "pvc://data/k.jsonl", "skills": "pvc://data/s.jsonl"},
                "resources": {"gpusPerNode": 0},
            },
        }
    )
    query = 'sum(labtune_reconciliations_total{job="labtune-operator", kind="TuningJob"}) > 0'
    eventually(lambda: prometheus.query(query) or None, timeout=90, what="a TuningJob reconciliation")
    # rate() over the dashboard's 1m window needs two samples of the new series.
    eventually(lambda: prometheus.query(KEY_QUERIES[1].replace("$__rate_interval", "1m")) or None, timeout=30)
    yield prometheus
    core.delete_namespace(namespace)


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((CHART / "files/dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert set(KEY_QUERIES) <= set(queries)
    return queries


def _fill(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def test_key_dashboard_queries_return_data(reconciled: Prometheus) -> None:
    for query in KEY_QUERIES:
        assert reconciled.query(_fill(query)), f"no data: {query}"
    states = reconciled.query('labtune_resources{kind="TuningJob"}')
    assert sum(float(series["value"][1]) for series in states) >= 1


def test_every_dashboard_query_evaluates(reconciled: Prometheus) -> None:
    for query in _dashboard_queries():
        reconciled.query(_fill(query))  # asserts a successful parse and evaluation


def test_alert_rules_evaluate_against_the_live_operator(reconciled: Prometheus, tools: Tools) -> None:
    for group in alert_groups(tools.helm)["groups"]:
        for rule in group["rules"]:
            reconciled.query(rule["expr"])

    def evaluated() -> list[dict[str, Any]] | None:
        groups = reconciled.get("/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else None

    rules = eventually(evaluated, timeout=30, what="every rule evaluated once")
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    # Some may be pending (a new counter has no rate yet; the TuningJob's pod is never scheduled here),
    # none may fire: the operator is up and nothing failed.
    assert [rule["name"] for rule in rules if rule["state"] == "firing"] == []
