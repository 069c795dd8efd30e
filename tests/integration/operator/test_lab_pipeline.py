"""A LabPipeline on the real API server, reconciled by the operator process (with its RBAC): each
new leaves digest of the Taxonomy stamps a SyntheticDataRun and a TuningJob that the API server
accepts and the operator then runs as any other; a finished run is reported as the latest model; the
pipeline's deletion takes its runs with it (garbage collection)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubetest import Cluster, Kubelet, condition, eventually

from labtune.api import GROUP, VERSION

pytestmark = pytest.mark.usefixtures("operator_process")
A, B = "a" * 40, "b" * 40
X, Y = "1" * 64, "2" * 64
ADAPTER = "pvc://labtune-artifacts/models/lab/adapter"


def _taxonomy() -> dict[str, Any]:
    git = {"url": "https://git.example.com/org/taxonomy.git", "ref": {"branch": "main"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Taxonomy",
        "metadata": {"name": "lp-tax"},
        "spec": {"source": {"git": git}},
    }


def _pipeline() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LabPipeline",
        "metadata": {"name": "lab"},
        "spec": {
            "taxonomyRef": {"name": "lp-tax"},
            "syntheticDataRunTemplate": {
                "spec": {"teacher": {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}}}
            },
            "tuningJobTemplate": {
                "spec": {
                    "baseModel": {"uri": "pvc://labtune-artifacts/models/base"},
                    "resources": {"gpusPerNode": 0},
                }
            },
        },
    }


def _sync(cluster: Cluster, kubelet: Kubelet, commit: str, digest: str, done: set[str]) -> None:
    """The Taxonomy's next sync Job ends with this revision and leaves digest."""

    def unfinished() -> str | None:
        jobs = cluster.batch.list_namespaced_job(
            cluster.namespace, label_selector="labtune.io/taxonomy=lp-tax"
        )
        names = [j.metadata.name for j in jobs.items if j.metadata.name not in done]
        return names[0] if names else None

    job = eventually(unfinished, what="a new sync Job")
    summary = {
        "commit": commit,
        "leafCounts": {"knowledge": 1, "freeformSkills": 2, "groundedSkills": 0, "total": 3},
        "manifest": "pvc://labtune-artifacts/x/manifest.json",
        "leavesDigest": digest,
    }
    kubelet.finish(job, 0, json.dumps(summary))
    done.add(job)


def _finish(cluster: Cluster, name: str) -> None:
    """Both runs end as succeeded (as their Jobs would have made them: the runs' own loop is tested
    elsewhere); a finished run is final to the operator."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for plural, extra in (("syntheticdataruns", {}), ("tuningjobs", {"output": {"adapter": ADAPTER}})):
        status = {"state": "Succeeded", "startTime": stamp, "completionTime": stamp, **extra}
        cluster.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, cluster.namespace, plural, name, {"status": status}
        )


def test_each_new_leaves_digest_stamps_runs_that_the_operator_runs(
    cluster: Cluster, kubelet: Kubelet
) -> None:
    done: set[str] = set()
    cluster.create(_taxonomy())
    _sync(cluster, kubelet, A, X, done)
    cluster.create(_pipeline())
    first = f"lab-{A[:12]}"
    status = cluster.status_when("labpipelines", "lab", lambda s: s.get("active"), "the first run")
    assert status["active"] == {"name": first, "revision": A, "leavesDigest": X, "state": "Running"}
    data, job = cluster.get("syntheticdataruns", first), cluster.get("tuningjobs", first)
    assert data["spec"]["taxonomyRef"] == {"name": "lp-tax", "revision": A}
    assert job["spec"]["data"] == {"syntheticDataRunRef": {"name": first}}
    assert data["metadata"]["ownerReferences"][0]["kind"] == "LabPipeline"
    # The stamped run is a run like any other: the operator starts its generator Job on revision A.
    run = cluster.status_when("syntheticdataruns", first, lambda s: s.get("jobName"), "its generator Job")
    assert run["taxonomyRevision"] == A
    assert cluster.status_when("tuningjobs", first, lambda s: s.get("state") == "Waiting", "waiting")

    _finish(cluster, first)
    status = cluster.status_when("labpipelines", "lab", lambda s: s.get("state") == "Idle", "idle")
    assert status["latestSucceeded"] == {"name": first, "revision": A, "output": {"adapter": ADAPTER}}
    assert condition(status, "Ready")["reason"] == "UpToDate"
    assert {"Stamped", "Running", "LatestModel", "UpToDate"} <= {e.reason for e in cluster.events("lab")}

    # A new revision with other leaves (the spec change starts a sync at once).
    cluster.patch("taxonomies", "lp-tax", {"spec": {"exclude": ["knowledge/old/**"]}})
    _sync(cluster, kubelet, B, Y, done)
    second = f"lab-{B[:12]}"
    status = cluster.status_when(
        "labpipelines", "lab", lambda s: (s.get("active") or {}).get("name") == second, "the second run"
    )
    assert (status["runs"], status["latestSucceeded"]["revision"]) == (2, A)
    assert cluster.get("tuningjobs", second)["spec"]["data"]["syntheticDataRunRef"]["name"] == second

    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, "labpipelines", "lab", propagation_policy="Foreground"
    )

    def collected() -> bool | None:
        for plural in ("syntheticdataruns", "tuningjobs"):
            for name in (first, second):
                try:
                    cluster.get(plural, name)
                except ApiException as error:
                    if error.status == 404:
                        continue
                    raise
                return None
        return True

    eventually(collected, 60, "the garbage collector to delete the stamped runs")
