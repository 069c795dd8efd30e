"""The operator syncs Taxonomies through sync Jobs and runs SyntheticDataRuns once their Taxonomy is
Ready, on the real API server (the tests stand in for the kubelet)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from typing import Any

import pytest
import yaml
from kubetest import Cluster, Kubelet, OperatorProcess, condition, eventually, tuning_job
from prometheus_client import generate_latest

from labtune.api import GROUP, VERSION
from labtune.contract.generate import GenerateConfig
from labtune.contract.taxonomy_sync import TaxonomySyncConfig
from labtune.generator.generator_metrics import GeneratorMetrics

pytestmark = pytest.mark.usefixtures("operator_process")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def taxonomy(name: str, **spec: Any) -> dict[str, Any]:
    git = {
        "url": "https://git.example.com/org/taxonomy.git",
        "ref": {"branch": "main"},
        "secretRef": {"name": "git"},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Taxonomy",
        "metadata": {"name": name},
        "spec": {"source": {"git": git}, "base": "origin/main", **spec},
    }


def data_run(
    name: str, taxonomy_name: str, teacher: dict[str, Any], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SyntheticDataRun",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taxonomyRef": {"name": taxonomy_name}, "teacher": teacher, "pipeline": {"builtin": "full"}},
    }


def sync_summary(errors: list[dict[str, Any]], **fields: Any) -> str:
    return json.dumps(
        {
            "commit": COMMIT,
            "leafCounts": {"knowledge": 1, "freeformSkills": 2, "groundedSkills": 0, "total": 3},
            "changedLeaves": ["compositional_skills/writing/poems/qna.yaml"],
            "changedLeafCount": 1,
            "errors": errors,
            "errorCount": len(errors),
            "manifest": "pvc://labtune-artifacts/x/manifest.json",
            **fields,
        }
    )


def sync_job(cluster: Cluster, name: str) -> str:
    def probe() -> str | None:
        jobs = cluster.batch.list_namespaced_job(
            cluster.namespace, label_selector=f"labtune.io/taxonomy={name}"
        )
        return jobs.items[0].metadata.name if jobs.items else None

    return eventually(probe, what=f"the sync Job of {name}")


def test_taxonomy_sync_reports_the_summary_and_releases_the_run(cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.create(taxonomy("tax"))
    endpoint = {
        "url": "https://teacher.example.com/v1",
        "model": "mixtral",
        "apiKeySecretRef": {"name": "teacher", "key": "token"},
    }
    cluster.create(data_run("sdg", "tax", {"endpoint": endpoint}, {"kueue.x-k8s.io/queue-name": "team-a"}))
    status = cluster.status_when("syntheticdataruns", "sdg", lambda s: s.get("state") == "Waiting", "waiting")
    assert condition(status, "Ready")["reason"] == "WaitingForTaxonomy"

    job = sync_job(cluster, "tax")
    config_map = cluster.core.read_namespaced_config_map(job, cluster.namespace)
    config = TaxonomySyncConfig.model_validate(yaml.safe_load(config_map.data["config.yaml"]))
    assert (config.git.url, config.git.branch, config.base) == (
        "https://git.example.com/org/taxonomy.git",
        "main",
        "origin/main",
    )
    assert config.git.credentials_dir == "/var/run/secrets/labtune/git"
    pod = cluster.job(job)["spec"]["template"]["spec"]
    assert {"secretName": "git", "defaultMode": 0o440} in [v.get("secret") for v in pod["volumes"]]
    assert pod["containers"][0]["args"] == ["taxonomy", "sync", "--config", "/etc/labtune/config.yaml"]

    kubelet.finish(job, 0, sync_summary([]))
    status = cluster.status_when("taxonomies", "tax", lambda s: s.get("revision") == COMMIT, "the revision")
    assert status["leafCounts"]["total"] == 3
    assert status["changedLeaves"] == ["compositional_skills/writing/poems/qna.yaml"]
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Validated")["status"] == "True"
    assert status["lastSyncTime"]

    # The run is released by the Taxonomy's change (not its resync timer) and pins the revision.
    status = cluster.status_when(
        "syntheticdataruns", "sdg", lambda s: s.get("jobName"), "the generator Job", 10
    )
    assert status["taxonomyRevision"] == COMMIT
    generator = cluster.job("sdg-generate")
    assert generator["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # No Kueue runs here: the Job stays suspended for it, and the run says so.
    assert generator["spec"]["suspend"] is True
    status = cluster.status_when("syntheticdataruns", "sdg", lambda s: s.get("state") == "Queued", "queued")
    assert condition(status, "Waiting")["reason"] == "WaitingForKueue"
    main = generator["spec"]["template"]["spec"]["containers"][0]
    key_ref = {
        "name": "LABTUNE_TEACHER_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "teacher", "key": "token"}},
    }
    assert key_ref in main["env"]
    config_map = cluster.core.read_namespaced_config_map("sdg-generate", cluster.namespace)
    config = GenerateConfig.model_validate(yaml.safe_load(config_map.data["config.yaml"]))
    assert config.taxonomy.commit == COMMIT
    assert config.teacher.url == "https://teacher.example.com/v1"
    assert config.teacher.api_key_env == "LABTUNE_TEACHER_API_KEY"
    assert config.pipeline.builtin == "full"


def test_a_model_teacher_runs_as_a_vllm_sidecar(cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.create(taxonomy("tax2"))
    kubelet.finish(sync_job(cluster, "tax2"), 0, sync_summary([]))
    cluster.status_when("taxonomies", "tax2", lambda s: s.get("revision"), "synced")
    cluster.create(data_run("served", "tax2", {"model": {"uri": "pvc://models/mixtral", "gpus": 2}}))
    spec = cluster.job("served-generate")["spec"]["template"]["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar
    assert sidecar["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert sidecar["args"][:2] == ["--model", "/artifacts/models/mixtral"]
    assert "--tensor-parallel-size" in sidecar["args"]
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    config_map = cluster.core.read_namespaced_config_map("served-generate", cluster.namespace)
    config = GenerateConfig.model_validate(yaml.safe_load(config_map.data["config.yaml"]))
    assert config.teacher.url == "http://127.0.0.1:8000/v1"


def test_validation_errors_stall_the_dependent_run(cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.create(taxonomy("broken"))
    error = {"path": "knowledge/a/qna.yaml", "line": 7, "message": "'seed_examples' is a required property"}
    kubelet.finish(sync_job(cluster, "broken"), 0, sync_summary([error]))
    status = cluster.status_when("taxonomies", "broken", lambda s: s.get("errorCount") == 1, "the errors")
    assert status["errors"] == [error]
    assert condition(status, "Validated")["status"] == "False"
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ValidationFailed")
    assert "knowledge/a/qna.yaml:7" in ready["message"]

    cluster.create(data_run("blocked", "broken", {"endpoint": {"url": "http://t:8000/v1", "model": "t"}}))
    status = cluster.status_when(
        "syntheticdataruns", "blocked", lambda s: s.get("state") == "Waiting", "waiting"
    )
    assert condition(status, "Ready")["reason"] == "TaxonomyInvalid"
    assert condition(status, "Stalled")["status"] == "True"


def test_a_taxonomy_without_leaves_is_not_ready(cluster: Cluster, kubelet: Kubelet) -> None:
    """Only a misnamed qna.yml: synced, but nothing to generate from; the warning says why."""
    cluster.create(taxonomy("empty"))
    warning = {"path": "knowledge/a/qna.yml", "message": "a leaf must be named 'qna.yaml'"}
    none = {"knowledge": 0, "freeformSkills": 0, "groundedSkills": 0, "total": 0}
    summary = sync_summary(
        [], leafCounts=none, changedLeaves=[], changedLeafCount=0, warnings=[warning], warningCount=1
    )
    kubelet.finish(sync_job(cluster, "empty"), 0, summary)
    status = cluster.status_when("taxonomies", "empty", lambda s: s.get("revision") == COMMIT, "the revision")
    assert (status["warningCount"], status["warnings"]) == (1, [warning])
    for name in ("Ready", "Validated"):
        ready = condition(status, name)
        assert (ready["status"], ready["reason"]) == ("False", "NoLeaves")
    assert "knowledge/a/qna.yml: a leaf must be named 'qna.yaml'" in condition(status, "Ready")["message"]

    cluster.create(data_run("nothing", "empty", {"endpoint": {"url": "http://t:8000/v1", "model": "t"}}))
    status = cluster.status_when(
        "syntheticdataruns", "nothing", lambda s: s.get("state") == "Waiting", "waiting"
    )
    assert condition(status, "Ready")["reason"] == "TaxonomyInvalid"
    assert condition(status, "Stalled")["status"] == "True"


def test_a_failed_sync_says_why(cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.create(taxonomy("unreachable"))
    kubelet.finish(
        sync_job(cluster, "unreachable"), 78, "error: cannot clone https://git.example.com: not found"
    )
    status = cluster.status_when(
        "taxonomies", "unreachable", lambda s: condition(s, "Ready").get("reason") == "SyncFailed", "failure"
    )
    assert "cannot clone https://git.example.com: not found" in condition(status, "Ready")["message"]
    assert condition(status, "Stalled")["status"] == "True"


def test_missing_taxonomy_is_a_condition(cluster: Cluster) -> None:
    cluster.create(data_run("orphan", "nowhere", {"endpoint": {"url": "http://t:8000/v1", "model": "t"}}))
    status = cluster.status_when(
        "syntheticdataruns", "orphan", lambda s: s.get("state") == "Waiting", "waiting"
    )
    assert condition(status, "Ready")["reason"] == "TaxonomyNotFound"
    assert "Taxonomy nowhere does not exist" in condition(status, "Ready")["message"]


def test_operator_metrics_are_served(operator_process: OperatorProcess, cluster: Cluster) -> None:
    cluster.create(data_run("counted", "nowhere", {"endpoint": {"url": "http://t:8000/v1", "model": "t"}}))
    cluster.status_when("syntheticdataruns", "counted", lambda s: s.get("state") == "Waiting", "waiting")
    url = f"http://127.0.0.1:{operator_process.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    assert 'labtune_reconciliations_total{kind="SyntheticDataRun",result="ok"}' in text
    assert 'labtune_reconcile_duration_seconds_bucket{kind="SyntheticDataRun"' in text
    assert 'labtune_resources{kind="SyntheticDataRun",state="Waiting"}' in text


def test_a_tuning_job_fails_with_the_reason_of_its_failed_run(cluster: Cluster, kubelet: Kubelet) -> None:
    """Runs are final: a TuningJob on a SyntheticDataRun that failed can never get its datasets, so
    it fails at once, saying which run failed and why (issue 12, class 7)."""
    cluster.create(taxonomy("tax6"))
    kubelet.finish(sync_job(cluster, "tax6"), 0, sync_summary([]))
    cluster.create(data_run("sdg6", "tax6", {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}}))
    cluster.create(tuning_job("tune6", data={"syntheticDataRunRef": {"name": "sdg6"}}))
    waiting = cluster.status_when("tuningjobs", "tune6", lambda s: s.get("state") == "Waiting", "waiting")
    assert condition(waiting, "Ready")["reason"] == "WaitingForSyntheticDataRun"

    line = "error: teacher at http://teacher:8000/v1 refused the API key (401 Unauthorized)"
    kubelet.finish(cluster.job("sdg6-generate")["metadata"]["name"], 78, line)
    cluster.status_when("syntheticdataruns", "sdg6", lambda s: s.get("state") == "Failed", "the run failed")
    failed = cluster.status_when("tuningjobs", "tune6", lambda s: s.get("state") == "Failed", "failed", 20)
    ready = condition(failed, "Ready")
    assert ready["reason"] == "SyntheticDataRunFailed"
    assert ready["message"].startswith("SyntheticDataRun sdg6 failed: ")
    assert "refused the API key (401 Unauthorized)" in ready["message"]
    assert failed["completionTime"]
    assert "jobName" not in failed  # it never started a trainer
    eventually(lambda: "SyntheticDataRunFailed" in {e.reason for e in cluster.events("tune6")} or None)


def test_skipped_leaves_are_listed_on_a_succeeded_run(cluster: Cluster, kubelet: Kubelet) -> None:
    """Under leafFailurePolicy SkipLeaf the generator finishes with the good leaves; the run says
    which leaf produced nothing and why, in status and in Ready's message (issue 12, class 7)."""
    cluster.create(taxonomy("tax7"))
    kubelet.finish(sync_job(cluster, "tax7"), 0, sync_summary([]))
    run = data_run("sdg7", "tax7", {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}})
    run["spec"]["leafFailurePolicy"] = "SkipLeaf"
    cluster.create(run)
    job = cluster.job("sdg7-generate")["metadata"]["name"]
    config_map = cluster.core.read_namespaced_config_map(job, cluster.namespace)
    assert GenerateConfig.model_validate(
        yaml.safe_load(config_map.data["config.yaml"])
    ).leaf_failure_policy == ("SkipLeaf")
    reason = "leaf knowledge/sun/qna.yaml: no sample survived the pipeline (generate_qa 5->20, judge 20->0)"
    summary = {
        "taxonomyCommit": COMMIT,
        "teacherModel": "m",
        "outputs": {
            "skills": {"uri": "pvc://labtune-artifacts/x/skills.jsonl", "samples": 40, "sha256": "b" * 64}
        },
        "leavesDone": 2,
        "leavesTotal": 3,
        "samplesKept": 40,
        "failedLeaves": [{"path": "knowledge/sun/qna.yaml", "reason": reason}],
        "failedLeafCount": 1,
    }
    kubelet.finish(job, 0, json.dumps(summary))
    status = cluster.status_when(
        "syntheticdataruns", "sdg7", lambda s: s.get("state") == "Succeeded", "success"
    )
    assert status["failedLeaves"] == summary["failedLeaves"]
    assert status["failedLeafCount"] == 1
    assert (status["progress"]["leavesDone"], status["progress"]["leavesTotal"]) == (2, 3)
    message = condition(status, "Ready")["message"]
    assert "1 leaf(s) produced nothing and were skipped (status.failedLeaves)" in message
    assert reason in message


def _serve_metrics(address: tuple[str, int], text: str) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(address, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_sharded_run_retries_a_failed_shard_alone_then_mixes(
    cluster: Cluster, kubelet: Kubelet, operator_process: OperatorProcess
) -> None:
    """parallelism 2: an Indexed Job with per-index retries (the real Job controller makes the pods
    and replaces only the failed one), progress summed over the shards (a running one's metrics, a
    finished one's summary), then the mix Job, whose summary is the run's."""
    cluster.create(taxonomy("tax8"))
    kubelet.finish(sync_job(cluster, "tax8"), 0, sync_summary([]))
    run = data_run("sdg8", "tax8", {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}})
    run["spec"]["parallelism"] = 2
    cluster.create(run)
    job = cluster.job("sdg8-generate")
    assert (job["spec"]["completionMode"], job["spec"]["backoffLimitPerIndex"]) == ("Indexed", 3)
    first = [
        eventually(lambda i=i: next(iter(kubelet.indexed_pods(job["metadata"]["name"], i)), None))
        for i in (0, 1)
    ]

    running = GeneratorMetrics()  # what the generator serves: gauges of leaves, counters of samples
    running.leaves_total.set(2)
    running.leaves_done.set(1)
    running.samples_kept.inc(5)
    metrics = generate_latest(running.registry).decode()
    server = _serve_metrics(("127.0.0.2", operator_process.job_metrics_port), metrics)
    try:
        kubelet.run_pod(first[0], ip="127.0.0.2")
        kubelet.finish_pod(first[1], 1, "error: the teacher failed after 5 retries")
        retried = eventually(
            lambda: pods[1] if len(pods := kubelet.indexed_pods("sdg8-generate", 1)) == 2 else None,
            what="a new pod for the failed index",
        )
        assert len(kubelet.indexed_pods("sdg8-generate", 0)) == 1, "the running shard was left alone"
        shard = {"kind": "Shard", "index": 1, "shards": 2, "leavesDone": 2, "leavesTotal": 2,
                 "samplesKept": 20, "outcome": "pvc://labtune-artifacts/x/shards/shard-001.json"}  # fmt: skip
        kubelet.finish_pod(retried, 0, json.dumps(shard))
        status = cluster.status_when(
            "syntheticdataruns",
            "sdg8",
            lambda s: (s.get("progress") or {}).get("leavesTotal") == 4,
            "progress over both shards",
        )
        assert (status["progress"]["leavesDone"], status["progress"]["samplesKept"]) == (3, 25)
        assert status["progress"]["percent"] == 75
    finally:
        server.shutdown()
    kubelet.finish_pod(first[0], 0, json.dumps({**shard, "index": 0}), ip="127.0.0.2")

    mix = cluster.job("sdg8-mix")
    assert mix["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--mix"
    status = cluster.status_when(
        "syntheticdataruns", "sdg8", lambda s: s.get("jobName") == "sdg8-mix", "mixing"
    )
    assert status["restarts"] >= 1
    dataset = {"uri": "pvc://labtune-artifacts/x/skills.jsonl", "samples": 40, "sha256": "b" * 64}
    summary = {"taxonomyCommit": COMMIT, "teacherModel": "m", "outputs": {"skills": dataset},
               "leavesDone": 4, "leavesTotal": 4, "samplesKept": 40}  # fmt: skip
    kubelet.finish("sdg8-mix", 0, json.dumps(summary))
    status = cluster.status_when(
        "syntheticdataruns", "sdg8", lambda s: s.get("state") == "Succeeded", "success"
    )
    assert status["outputs"]["skills"] == dataset
    assert (status["progress"]["leavesDone"], status["progress"]["percent"]) == (4, 100)
