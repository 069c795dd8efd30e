"""The operator reconciles TuningJobs into trainer Jobs on the real API server."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubetest import GPU_PRODUCT, Cluster, Kubelet, OperatorProcess, condition, eventually, tuning_job

from labtune.api import GROUP, VERSION
from labtune.contract import EXIT_CONFIG_ERROR
from labtune.contract.train import TrainConfig

pytestmark = pytest.mark.usefixtures("operator_process")


def test_trainer_job_carries_gpu_scheduling_and_the_config(cluster: Cluster, gpu_node: str) -> None:

    resources = {
        "gpusPerNode": 2,
        "gpuProduct": GPU_PRODUCT,
        "memory": "64Gi",
        "shmSize": "8Gi",
        "nodeSelector": {"kubernetes.io/hostname": gpu_node},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "runtimeClassName": "nvidia",
    }
    # Pods naming an unknown RuntimeClass are rejected at admission.
    client.NodeV1Api(cluster.custom.api_client).create_runtime_class(
        {"metadata": {"name": "nvidia"}, "handler": "nvidia"}
    )
    cluster.claims("models", "data", "labtune-artifacts")
    cluster.create(tuning_job("gpu", resources=resources))
    status = cluster.status_when("tuningjobs", "gpu", lambda s: s.get("jobName"), "the trainer Job")
    assert status["jobName"] == "gpu-train"
    assert status["state"] == "Pending"
    assert status["startTime"]
    # Unschedulable once the scheduler has seen the claims: no volume is bound to them here.
    assert condition(status, "Ready")["reason"] in ("JobCreated", "PodsStarting", "Unschedulable")
    assert condition(status, "Reconciling")["status"] == "True"
    assert status["lineage"]["baseModel"] == "pvc://models/smollm2"

    job = cluster.job("gpu-train")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("TuningJob", "gpu", True)
    assert job["metadata"]["labels"]["labtune.io/tuningjob"] == "gpu"
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [EXIT_CONFIG_ERROR]
    pod = job["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["resources"]["limits"] == {"nvidia.com/gpu": "2", "memory": "64Gi"}
    # `labtune train` starts torchrun itself (2 processes, from the config), keeping its exit codes.
    assert (main["command"], main["args"]) == (["labtune"], ["train", "--config", "/etc/labtune/config.yaml"])
    assert pod["terminationGracePeriodSeconds"] == 300  # time to save a checkpoint on preemption
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]
    assert term["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": [GPU_PRODUCT]}
    ]
    assert pod["runtimeClassName"] == "nvidia"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    claims = sorted(
        v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    )
    assert claims == ["data", "labtune-artifacts", "models"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "LABTUNE_CONFIG", "value": "/etc/labtune/config.yaml"} in main["env"]

    config_map = cluster.core.read_namespaced_config_map("gpu-train", cluster.namespace)
    config = TrainConfig.model_validate(yaml.safe_load(config_map.data["config.yaml"]))
    assert [p.name for p in config.phases] == ["knowledge", "skills"]
    assert config.datasets.knowledge == "pvc://data/k.jsonl"
    assert config.output.startswith(f"pvc://labtune-artifacts/{cluster.namespace}/tuningjob/gpu-")
    assert (config.distributed.nodes, config.distributed.procs_per_node) == (1, 2)
    assert config_map.metadata.owner_references[0].name == "gpu"

    def bound() -> str | None:
        pods = cluster.core.list_namespaced_pod(cluster.namespace, label_selector="job-name=gpu-train").items
        return pods[0].spec.node_name if pods and pods[0].spec.node_name else None

    # The real scheduler places the pod on the tainted GPU node: GPU request, toleration, affinity.
    assert eventually(bound, what="the trainer pod to be scheduled") == gpu_node


def test_multi_node_runs_an_indexed_job_with_rendezvous(cluster: Cluster) -> None:
    cluster.create(tuning_job("multi", resources={"gpusPerNode": 4, "nodes": 3}))
    job = cluster.job("multi-train")
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 3)
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "multi-train"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == "multi-train-0.multi-train"
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == index
    assert env["MASTER_PORT"]["value"] == "29500"
    config_map = cluster.core.read_namespaced_config_map("multi-train", cluster.namespace)
    config = TrainConfig.model_validate(yaml.safe_load(config_map.data["config.yaml"]))
    assert (config.distributed.nodes, config.distributed.procs_per_node) == (3, 4)
    service = cluster.core.read_namespaced_service("multi-train", cluster.namespace)
    assert service.spec.cluster_ip == "None"
    assert service.spec.selector["labtune.io/tuningjob"] == "multi"


@pytest.fixture
def metrics_server(operator_process: OperatorProcess) -> Iterator[list[str]]:
    """Serves /metrics on the port the operator reads job pods on (the pods' IP is 127.0.0.1)."""
    body = ["# nothing yet\n"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = body[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", operator_process.job_metrics_port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield body
    server.shutdown()


TRAINER_METRICS = """\
# TYPE labtune_train_step gauge
labtune_train_step 42
# TYPE labtune_train_total_steps gauge
labtune_train_total_steps 100
# TYPE labtune_train_epoch gauge
labtune_train_epoch 0.84
# TYPE labtune_train_loss gauge
labtune_train_loss 1.25
# TYPE labtune_train_learning_rate gauge
labtune_train_learning_rate 0.0001
# TYPE labtune_train_eta_seconds gauge
labtune_train_eta_seconds 120
# TYPE labtune_train_phase gauge
labtune_train_phase{phase="knowledge"} 1
labtune_train_phase{phase="skills"} 0
"""


def test_progress_from_pod_metrics_then_success_from_the_termination_message(
    cluster: Cluster, kubelet: Kubelet, metrics_server: list[str]
) -> None:
    cluster.create(tuning_job("train"))
    cluster.job("train-train")
    metrics_server[0] = TRAINER_METRICS
    kubelet.run("train-train")
    status = cluster.status_when(
        "tuningjobs", "train", lambda s: s.get("progress", {}).get("step") == 42, "progress"
    )
    assert status["state"] == "Running"
    assert status["progress"] == {
        "step": 42,
        "totalSteps": 100,
        "percent": 42,
        "epoch": 0.84,
        "etaSeconds": 120,
    }
    assert status["metrics"] == {"loss": 1.25, "learningRate": 0.0001}
    assert status["currentPhase"] == "knowledge"

    digest = "a" * 64
    summary = {
        "output": {"adapter": "pvc://labtune-artifacts/out/adapter", "adapterSha256": digest},
        "metrics": {"loss": 0.9, "evalLoss": 1.1},
        "bestEvalLoss": 1.1,
        "steps": 100,
        "tokens": 123456,
        "checkpoints": [
            {"phase": "skills", "step": 50, "uri": "pvc://labtune-artifacts/out/ckpt-50", "evalLoss": 1.1}
        ],
    }
    kubelet.finish("train-train", 0, json.dumps(summary))
    status = cluster.status_when("tuningjobs", "train", lambda s: s.get("state") == "Succeeded", "success")
    assert status["output"] == summary["output"]
    assert status["metrics"] == summary["metrics"]  # the scraped learning rate is not the final one
    assert status["checkpoints"][0]["step"] == 50
    assert status["progress"]["percent"] == 100
    assert status["completionTime"]
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Succeeded")["status"] == "True"
    assert condition(status, "Reconciling") == {}
    events = eventually(
        lambda: ((found := cluster.events("train")) and found[-1].reason == "Succeeded" and found) or None,
        what="the Succeeded Event",
    )
    # In the order posted (the API server's resourceVersion), each once: no "waiting for its pods to
    # start" between the pods' end and the Job's Complete, nothing before the Job was created.
    reasons = [e.reason for e in events]
    assert reasons[0] == "JobCreated", reasons
    assert reasons[reasons.index("JobRunning") :] == ["JobRunning", "Succeeded"], reasons
    assert len(set(reasons)) == len(reasons), reasons


BENCHMARK = {"name": "facts", "dataset": "pvc://data/facts.jsonl", "generation": False}


def _evaluated(tuned_nll: float, passed: bool) -> dict[str, Any]:
    """The trainer's summary after scoring the base (nll 2.9) and the chosen checkpoint."""
    improvement = round(2.9 - tuned_nll, 4)
    return {
        "output": {"adapter": "pvc://labtune-artifacts/out/adapter", "adapterSha256": "a" * 64},
        "metrics": {"loss": 0.9, "evalLoss": 1.1},
        "steps": 8,
        "evaluation": {
            "benchmarks": [
                {"name": "facts", "examples": 8, "base": {"nll": 2.9}, "tuned": {"nll": tuned_nll}}
            ],
            "checkpoint": {
                "phase": "skills",
                "step": 8,
                "uri": "pvc://labtune-artifacts/out/skills/checkpoint-8",
                "selectedBy": "facts/nll",
                "value": tuned_nll,
                "candidates": 2,
            },
            "gate": {
                "benchmark": "facts",
                "metric": "nll",
                "base": 2.9,
                "tuned": tuned_nll,
                "improvement": improvement,
                "minImprovement": 0.1,
                "passed": passed,
            },
            "summary": "pvc://labtune-artifacts/out/evaluation/summary.json",
            "seconds": 12.5,
        },
    }


@pytest.mark.parametrize(
    ("tuned_nll", "passed", "state", "reason"),
    [(1.4, True, "Succeeded", "GatePassed"), (2.9, False, "Failed", "GateFailed")],
    ids=["passed", "failed"],
)
def test_the_gate_decides_whether_the_run_has_an_output(
    cluster: Cluster, kubelet: Kubelet, tuned_nll: float, passed: bool, state: str, reason: str
) -> None:
    name = f"gate-{reason.lower()}"
    evaluation = {
        "benchmarks": [BENCHMARK],
        "selectBy": {"benchmark": "facts"},
        "gate": {"benchmark": "facts", "minImprovement": 0.1},
    }
    cluster.create(tuning_job(name, evaluation=evaluation))
    cluster.job(f"{name}-train")
    config_map = cluster.core.read_namespaced_config_map(f"{name}-train", cluster.namespace)
    config = TrainConfig.model_validate(yaml.safe_load(config_map.data["config.yaml"]))
    assert [b.dataset for b in config.evaluation.benchmarks or []] == [BENCHMARK["dataset"]]
    summary = _evaluated(tuned_nll, passed)
    kubelet.finish(f"{name}-train", 0, json.dumps(summary))
    status = cluster.status_when("tuningjobs", name, lambda s: s.get("state") == state, state)
    assert status["evaluation"]["benchmarks"] == summary["evaluation"]["benchmarks"]
    assert status["evaluation"]["checkpoint"]["selectedBy"] == "facts/nll"
    assert status["evaluation"]["gate"]["passed"] is passed
    evaluated = condition(status, "Evaluated")
    assert (evaluated["status"], evaluated["reason"]) == (str(passed), reason)
    assert "facts/nll" in evaluated["message"]
    if passed:
        assert status["output"] == summary["output"]
        assert condition(status, "Succeeded")["status"] == "True"
    else:
        # Nothing that promotes what a TuningJob reports may pick up a model that failed its gate.
        assert "output" not in status
        assert condition(status, "Failed")["reason"] == "GateFailed"
        warnings = eventually(
            lambda: [e for e in cluster.events(name) if e.reason == "GateFailed"] or None, what="event"
        )
        assert warnings[0].type == "Warning"


@pytest.mark.parametrize(
    ("name", "message", "says"),
    [
        ("nosummary", "", "Invalid JSON: EOF while parsing a value at line 1 column 0"),
        (
            "badsummary",
            json.dumps({"output": {"adapter": 3}}),
            "output.adapter: Input should be a valid string",
        ),
    ],
)
def test_success_without_a_valid_summary_is_a_failure_in_one_line(
    cluster: Cluster, kubelet: Kubelet, name: str, message: str, says: str
) -> None:
    cluster.create(tuning_job(name))
    cluster.job(f"{name}-train")
    kubelet.finish(f"{name}-train", 0, message)
    status = cluster.status_when("tuningjobs", name, lambda s: s.get("state") == "Failed", "failure")
    failed = condition(status, "Failed")
    assert failed["reason"] == "InvalidSummary"
    assert failed["message"].startswith("the pod succeeded without a valid summary: ")
    assert says in failed["message"]
    assert "\n" not in failed["message"]
    assert "output" not in status


def test_configuration_error_fails_at_once_with_the_pods_line(cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.create(tuning_job("bad", backoffLimit=5))
    cluster.job("bad-train")
    kubelet.finish("bad-train", EXIT_CONFIG_ERROR, "error: dataset pvc://data/k.jsonl is empty")
    status = cluster.status_when("tuningjobs", "bad", lambda s: s.get("state") == "Failed", "failure")
    failed = condition(status, "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert "exit code 78: error: dataset pvc://data/k.jsonl is empty" in failed["message"]
    assert condition(status, "Stalled")["status"] == "True"
    assert len(kubelet.pods("bad-train")) == 1  # not retried
    warnings = eventually(
        lambda: [e for e in cluster.events("bad") if e.type == "Warning"] or None, what="event"
    )
    assert warnings[0].reason == "PodFailurePolicy"


def test_suspend_and_resume(cluster: Cluster) -> None:
    cluster.create(tuning_job("paused", suspend=True))
    status = cluster.status_when("tuningjobs", "paused", lambda s: s.get("state") == "Suspended", "suspended")
    assert condition(status, "Suspended")["status"] == "True"
    assert cluster.job("paused-train")["spec"]["suspend"] is True
    cluster.patch("tuningjobs", "paused", {"spec": {"suspend": False}})
    eventually(
        lambda: cluster.job("paused-train")["spec"]["suspend"] is False or None, what="the Job to resume"
    )
    status = cluster.status_when("tuningjobs", "paused", lambda s: s.get("state") != "Suspended", "resumed")
    assert condition(status, "Suspended")["status"] == "False"


def test_deadline_fails_the_job(cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.create(tuning_job("late", activeDeadlineSeconds=2))
    cluster.job("late-train")
    kubelet.run("late-train")
    status = cluster.status_when(
        "tuningjobs", "late", lambda s: s.get("state") == "Failed", "deadline", timeout=60
    )
    assert condition(status, "Failed")["reason"] == "DeadlineExceeded"


def test_waits_for_its_synthetic_data_run_then_uses_its_datasets(cluster: Cluster) -> None:
    body = tuning_job("chained", data={"syntheticDataRunRef": {"name": "sdg"}})
    cluster.create(body)
    status = cluster.status_when("tuningjobs", "chained", lambda s: s.get("state") == "Waiting", "waiting")
    assert condition(status, "Ready")["reason"] == "SyntheticDataRunNotFound"
    assert "jobName" not in status

    run = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SyntheticDataRun",
        "metadata": {"name": "sdg"},
        "spec": {
            "taxonomyRef": {"name": "absent"},
            "teacher": {"endpoint": {"url": "http://t:8000/v1", "model": "t"}},
        },
    }
    cluster.create(run)
    status = cluster.status_when(
        "tuningjobs",
        "chained",
        lambda s: condition(s, "Ready").get("reason") == "WaitingForSyntheticDataRun",
        "waiting",
    )
    # The run finishes (its own generator is not under test here): the job is released at once.
    digest = "b" * 64
    outputs = {
        "knowledge": {"uri": "pvc://labtune-artifacts/sdg/knowledge.jsonl", "samples": 10, "sha256": digest},
        "skills": {"uri": "pvc://labtune-artifacts/sdg/skills.jsonl", "samples": 20, "sha256": digest},
        "evaluation": {"uri": "pvc://labtune-artifacts/sdg/evaluation.jsonl", "samples": 3, "sha256": digest},
        "evaluationChoices": {
            "uri": "pvc://labtune-artifacts/sdg/evaluation-choices.jsonl",
            "samples": 4,
            "sha256": digest,
        },
    }
    finished = {
        "state": "Succeeded",
        "outputs": outputs,
        "taxonomyRevision": "c" * 40,
        "completionTime": "2026-11-24T07:00:00Z",
    }
    cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, cluster.namespace, "syntheticdataruns", "sdg", {"status": finished}
    )
    status = cluster.status_when("tuningjobs", "chained", lambda s: s.get("jobName"), "released", timeout=15)
    assert status["lineage"]["taxonomyRevision"] == "c" * 40
    assert [d["uri"] for d in status["lineage"]["datasets"]] == [
        outputs["knowledge"]["uri"],
        outputs["skills"]["uri"],
        outputs["evaluation"]["uri"],
        outputs["evaluationChoices"]["uri"],
    ]
    config_map = cluster.core.read_namespaced_config_map("chained-train", cluster.namespace)
    config = TrainConfig.model_validate(yaml.safe_load(config_map.data["config.yaml"]))
    assert config.datasets.skills == outputs["skills"]["uri"]
    # The held-back seed questions are scored by default, likelihood and generation, and the
    # teacher's multiple-choice questions by lm-eval.
    benchmark, choices = config.evaluation.benchmarks or []
    assert (benchmark.name, benchmark.type, benchmark.dataset) == (
        "held-out",
        "reference",
        outputs["evaluation"]["uri"],
    )
    assert benchmark.likelihood
    assert benchmark.generation
    assert (choices.name, choices.type, choices.dataset) == (
        "multiple-choice",
        "multipleChoice",
        outputs["evaluationChoices"]["uri"],
    )


def test_a_deleted_child_job_is_recreated_once(cluster: Cluster) -> None:
    cluster.create(tuning_job("again"))
    first = cluster.job("again-train")
    cluster.batch.delete_namespaced_job("again-train", cluster.namespace, propagation_policy="Background")
    second = eventually(
        lambda: (
            job
            if (job := cluster.job("again-train"))["metadata"]["uid"] != first["metadata"]["uid"]
            else None
        ),
        what="the Job to be recreated",
    )
    assert second["metadata"]["name"] == "again-train"
    status = cluster.status_when("tuningjobs", "again", lambda s: s.get("restarts") == 1, "restart counted")
    assert status["jobName"] == "again-train"
    jobs = [
        j
        for j in cluster.batch.list_namespaced_job(cluster.namespace).items
        if j.metadata.name.startswith("again")
    ]
    assert len(jobs) == 1


def test_status_settles(cluster: Cluster) -> None:
    """Level-triggered and idempotent: repeated reconciliations of an unchanged job write nothing."""
    cluster.create(tuning_job("steady", suspend=True))
    cluster.status_when("tuningjobs", "steady", lambda s: s.get("state") == "Suspended", "suspended")
    version = cluster.get("tuningjobs", "steady")["metadata"]["resourceVersion"]
    import time

    time.sleep(12)  # two resync intervals
    assert cluster.get("tuningjobs", "steady")["metadata"]["resourceVersion"] == version


def test_deleting_the_resource_garbage_collects_its_children(cluster: Cluster) -> None:
    cluster.create(tuning_job("gone", resources={"gpusPerNode": 1, "nodes": 2}))
    cluster.job("gone-train")
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.namespace, "tuningjobs", "gone")

    def collected() -> bool | None:
        jobs = cluster.batch.list_namespaced_job(
            cluster.namespace, label_selector="labtune.io/tuningjob=gone"
        ).items
        maps = cluster.core.list_namespaced_config_map(
            cluster.namespace, label_selector="labtune.io/tuningjob=gone"
        )
        services = cluster.core.list_namespaced_service(
            cluster.namespace, label_selector="labtune.io/tuningjob=gone"
        )
        return True if not (jobs or maps.items or services.items) else None

    eventually(collected, timeout=60, what="garbage collection of the Job, ConfigMap and Service")
