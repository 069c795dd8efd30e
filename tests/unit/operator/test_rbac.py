"""The namespaced RBAC variant grants exactly what the ClusterRole grants."""

from __future__ import annotations

from pathlib import Path

import yaml

RBAC = Path(__file__).resolve().parents[3] / "deploy" / "rbac"


def test_role_and_crd_cluster_role_together_equal_the_cluster_role() -> None:
    (cluster_role,) = yaml.safe_load_all((RBAC / "clusterrole.yaml").read_text())
    role, crd_role = yaml.safe_load_all((RBAC / "role.yaml").read_text())
    assert (role["kind"], crd_role["kind"]) == ("Role", "ClusterRole")
    assert role["rules"] + crd_role["rules"] == cluster_role["rules"]


def test_the_operator_never_reads_secrets() -> None:
    (cluster_role,) = yaml.safe_load_all((RBAC / "clusterrole.yaml").read_text())
    assert all("secrets" not in rule["resources"] for rule in cluster_role["rules"])
