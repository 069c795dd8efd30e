"""A SyntheticDataRun in the shared run loop against the in-memory fake client: the wait for its
Taxonomy (missing, syncing, invalid), its release with the revision pinned, and the generator's
summary in status. No control plane."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from fake_kube import FakeKube

from labtune.api import API_VERSION
from labtune.contract import metric_names as m
from labtune.operator.children.pod_metrics import Samples
from labtune.operator.machinery.watch_store import Store
from labtune.operator.runs.run_reconcile import reconcile_run
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run.synthetic_data_run_reconcile import SyntheticDataRunKind

KIND = SyntheticDataRunKind()
SETTINGS = OperatorSettings()
NOW = datetime(2026, 12, 3, tzinfo=UTC)
COMMIT = "d" * 40
JOB = "sdg-generate"


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.put(
        {
            "apiVersion": API_VERSION,
            "kind": "SyntheticDataRun",
            "metadata": {"name": "sdg", "namespace": "ns"},
            "spec": {
                "taxonomyRef": {"name": "tax"},
                "teacher": {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}},
            },
        }
    )
    return fake


def reconcile(kube: FakeKube) -> None:
    body = kube.get("SyntheticDataRun", "ns", "sdg")
    assert body is not None
    reconcile_run(kube, Store(), body, KIND, SETTINGS, NOW, fresh=True)  # type: ignore[arg-type]


def state(kube: FakeKube) -> tuple[str, str, bool]:
    status = (kube.get("SyntheticDataRun", "ns", "sdg") or {})["status"]
    types = {c["type"]: c for c in status["conditions"]}
    return status["state"], types["Ready"]["reason"], "Stalled" in types


def taxonomy(kube: FakeKube, conditions: list[tuple[str, str, str]], revision: str | None = None) -> None:
    at = "2026-12-03T00:00:00Z"
    kube.put(
        {
            "apiVersion": API_VERSION,
            "kind": "Taxonomy",
            "metadata": {"name": "tax", "namespace": "ns"},
            "spec": {"source": {"git": {"url": "https://git.example.com/t.git"}}},
            "status": {
                "conditions": [
                    {"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": at}
                    for t, s, r in conditions
                ],
                "errorCount": 2,
                **({"revision": revision} if revision else {}),
            },
        }
    )


def test_waits_for_its_taxonomy_and_starts_on_its_revision(kube: FakeKube) -> None:
    reconcile(kube)
    assert state(kube) == ("Waiting", "TaxonomyNotFound", False)
    taxonomy(kube, [("Ready", "False", "Syncing")])
    reconcile(kube)
    assert state(kube) == ("Waiting", "WaitingForTaxonomy", False)
    taxonomy(kube, [("Ready", "False", "ValidationFailed"), ("Validated", "False", "ValidationFailed")])
    reconcile(kube)
    assert state(kube) == ("Waiting", "TaxonomyInvalid", True)  # stalled until someone pushes a fix
    assert kube.get("Job", "ns", JOB) is None
    taxonomy(kube, [("Ready", "True", "Synced"), ("Validated", "True", "Valid")], COMMIT)
    reconcile(kube)
    assert state(kube) == ("Pending", "JobCreated", False)
    status = (kube.get("SyntheticDataRun", "ns", "sdg") or {})["status"]
    assert (status["taxonomyRevision"], status["jobName"]) == (COMMIT, JOB)
    config = (kube.get("ConfigMap", "ns", JOB) or {})["data"]["config.yaml"]
    assert COMMIT in config


def finish(kube: FakeKube, summary: dict[str, Any], job_name: str = JOB) -> None:
    kube.put_job_pod("SyntheticDataRun", "sdg", job_name, 0, json.dumps(summary))
    job = kube.get("Job", "ns", job_name)
    assert job is not None
    kube.put({**job, "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}})


def test_the_generator_summary_becomes_status(kube: FakeKube) -> None:
    taxonomy(kube, [("Ready", "True", "Synced")], COMMIT)
    reconcile(kube)
    dataset = {"uri": "pvc://labtune-artifacts/ns/sdg/knowledge.jsonl", "samples": 40, "sha256": "e" * 64}
    failed = [{"path": "compositional_skills/x/qna.yaml", "reason": "teacher returned nothing usable"}]
    finish(
        kube,
        {
            "taxonomyCommit": COMMIT,
            "teacherModel": "m",
            "outputs": {"knowledge": dataset},
            "leavesDone": 2,
            "leavesTotal": 3,
            "samplesGenerated": 50,
            "samplesKept": 40,
            "failedLeaves": failed,
            "failedLeafCount": 1,
        },
    )
    reconcile(kube)
    status = (kube.get("SyntheticDataRun", "ns", "sdg") or {})["status"]
    assert state(kube)[:2] == ("Succeeded", "Succeeded")
    assert status["outputs"]["knowledge"] == dataset
    assert (status["progress"]["percent"], status["progress"]["samplesKept"]) == (100, 40)
    assert status["failedLeaves"] == failed
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "1 leaf(s) produced nothing" in ready["message"]
    assert status["gpuSeconds"] == 0  # an endpoint teacher holds no GPU of this cluster


def test_a_sharded_run_generates_in_an_indexed_job_then_mixes(kube: FakeKube) -> None:
    body = kube.get("SyntheticDataRun", "ns", "sdg")
    assert body is not None
    kube.put({**body, "spec": {**body["spec"], "parallelism": 2}})
    taxonomy(kube, [("Ready", "True", "Synced")], COMMIT)
    reconcile(kube)
    job = kube.get("Job", "ns", JOB)
    assert job is not None
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["backoffLimitPerIndex"] == 3  # a failing shard is retried alone, three times
    assert "backoffLimit" not in spec
    main = spec["template"]["spec"]["containers"][0]
    assert main["args"][-2:] == ["--shard", "$(JOB_COMPLETION_INDEX)"]
    config = yaml.safe_load((kube.get("ConfigMap", "ns", JOB) or {})["data"]["config.yaml"])
    assert config["shards"] == 2

    finish(kube, {"kind": "Shard", "index": 1, "shards": 2, "leavesDone": 2, "outcome": "pvc://a/b"})
    taxonomy(kube, [("Ready", "False", "Syncing")])  # its next sync: the mix needs its spec only
    reconcile(kube)
    assert state(kube)[:2] == ("Pending", "JobCreated")
    status = (kube.get("SyntheticDataRun", "ns", "sdg") or {})["status"]
    assert status["jobName"] == "sdg-mix"
    mix = kube.get("Job", "ns", "sdg-mix")
    assert mix is not None
    pod = mix["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["generate", "--config", "/etc/labtune/config.yaml", "--mix"]
    assert "completionMode" not in mix["spec"]
    assert not pod.get("initContainers"), "the mix step runs no teacher"
    assert {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v} == {JOB}

    dataset = {"uri": "pvc://labtune-artifacts/ns/sdg/knowledge.jsonl", "samples": 40, "sha256": "e" * 64}
    summary = {"taxonomyCommit": COMMIT, "teacherModel": "m", "outputs": {"knowledge": dataset}}
    finish(kube, {**summary, "leavesDone": 3, "leavesTotal": 3}, "sdg-mix")
    reconcile(kube)
    status = (kube.get("SyntheticDataRun", "ns", "sdg") or {})["status"]
    assert state(kube)[:2] == ("Succeeded", "Succeeded")
    assert status["outputs"]["knowledge"] == dataset
    assert status["progress"]["leavesDone"] == 3


def test_the_progress_of_a_sharded_run_adds_up_its_shards() -> None:
    running = Samples({m.GENERATE_LEAVES_DONE: 1, m.GENERATE_LEAVES_TOTAL: 4, m.GENERATE_SAMPLES_KEPT: 10})
    finished = Samples({m.GENERATE_LEAVES_DONE: 3, m.GENERATE_LEAVES_TOTAL: 3, m.GENERATE_SAMPLES_KEPT: 30})
    status = KIND.progress([running, finished])
    assert status is not None
    assert status.progress is not None
    assert (status.progress.leaves_done, status.progress.leaves_total) == (4, 7)
    assert (status.progress.percent, status.progress.samples_kept) == (57, 40)


def test_a_sharded_run_whose_taxonomy_is_gone_cannot_mix_and_says_so(kube: FakeKube) -> None:
    body = kube.get("SyntheticDataRun", "ns", "sdg")
    assert body is not None
    kube.put({**body, "spec": {**body["spec"], "parallelism": 2}})
    taxonomy(kube, [("Ready", "True", "Synced")], COMMIT)
    reconcile(kube)
    del kube.objects[("Taxonomy", "ns", "tax")]
    finish(kube, {"kind": "Shard", "index": 0, "shards": 2, "outcome": "pvc://a/b"})
    reconcile(kube)
    assert state(kube) == ("Waiting", "TaxonomyNotFound", True)
    assert kube.get("Job", "ns", "sdg-mix") is None
