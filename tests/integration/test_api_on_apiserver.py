"""The labtune.io CRDs on a real kube-apiserver: examples accepted, bad input rejected with the
intended message, immutability once started, the status subresource, kubectl columns and explain."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from labtune.api import GROUP, KINDS, VERSION

pytestmark = pytest.mark.usefixtures("labtune_crds")

ROOT = Path(__file__).resolve().parents[2]
PLURALS = {k.kind_name(): k.plural for k in KINDS}
KUBECTL = str(Path(sys.executable).parent / "kubectl")

TAXONOMY: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "Taxonomy",
    "metadata": {"name": "tax"},
    "spec": {"source": {"git": {"url": "https://example.com/org/taxonomy.git", "ref": {"branch": "main"}}}},
}
RUN: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "SyntheticDataRun",
    "metadata": {"name": "run"},
    "spec": {
        "taxonomyRef": {"name": "tax"},
        "teacher": {"endpoint": {"url": "http://teacher:8000/v1", "model": "teacher"}},
    },
}
JOB: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "TuningJob",
    "metadata": {"name": "job"},
    "spec": {
        "baseModel": {"uri": "pvc://models/smollm2-135m"},
        "data": {"knowledge": "pvc://data/knowledge.jsonl", "skills": "pvc://data/skills.jsonl"},
    },
}


def _objects(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def _create(api_client: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    plural = PLURALS[body["kind"]]
    created: dict[str, Any] = _objects(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body
    )
    return created


def _with(base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = copy.deepcopy(base)
    change(body["spec"])
    return body


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets spec.<path> (dotted; list indexes as numbers)."""

    def change(spec: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        node: Any = spec
        for key in keys[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        node[keys[-1]] = value

    return change


def _phase(**fields: Any) -> dict[str, Any]:
    return {"name": "knowledge", "dataset": "knowledge", **fields}


BAD_INPUT = [
    pytest.param(
        TAXONOMY,
        _set("source.git.url", "http://example.com/taxonomy.git"),
        "git url must use https:// or ssh://",
        id="taxonomy-http-url",
    ),
    pytest.param(
        TAXONOMY,
        _set("source.git.url", "file:///srv/taxonomy"),
        "git url must use https:// or ssh://",
        id="taxonomy-file-url",
    ),
    pytest.param(
        TAXONOMY,
        _set("source.git.ref", {"branch": "main", "tag": "v1"}),
        "set exactly one of branch, tag or commit",
        id="taxonomy-two-refs",
    ),
    pytest.param(
        TAXONOMY,
        _set("source.git.ref", {"commit": "HEAD~1"}),
        "must be a git commit SHA",
        id="taxonomy-bad-commit",
    ),
    pytest.param(
        TAXONOMY, _set("interval", "5s"), "must be a duration of at least 30s", id="taxonomy-interval"
    ),
    pytest.param(
        TAXONOMY,
        _set("source.git.secretRef", {"name": "Git_Creds"}),
        "must be a valid Kubernetes object name",
        id="taxonomy-secret-name",
    ),
    pytest.param(
        RUN,
        _set("teacher.model", {"uri": "pvc://models/mixtral"}),
        "set exactly one of teacher.endpoint (an OpenAI-compatible server) or teacher.model",
        id="run-two-teachers",
    ),
    pytest.param(
        RUN,
        _set("teacher", {}),
        "set exactly one of teacher.endpoint (an OpenAI-compatible server) or teacher.model",
        id="run-no-teacher",
    ),
    pytest.param(
        RUN,
        _set("taxonomyRef.name", "My_Taxonomy"),
        "must be a valid Kubernetes object name",
        id="run-taxonomy-ref-name",
    ),
    pytest.param(
        RUN,
        _set("teacher.endpoint.url", "ftp://teacher/v1"),
        "teacher endpoint url must be an http:// or https:// URL",
        id="run-endpoint-scheme",
    ),
    pytest.param(
        RUN,
        _set("pipeline", {"builtin": "full", "configMapRef": {"name": "p", "key": "pipeline.yaml"}}),
        "set either pipeline.builtin or pipeline.configMapRef, not both",
        id="run-two-pipelines",
    ),
    pytest.param(
        RUN, _set("scheduling.memory", "lots"), "must be a Kubernetes quantity such as 8Gi", id="run-memory"
    ),
    pytest.param(
        JOB,
        _set("baseModel.uri", "/models/granite"),
        "must be a pvc://<claim>/<path> artifact URI",
        id="job-model-uri",
    ),
    # What no pod can use yet: an object store, a path out of the claim's folder.
    pytest.param(
        JOB,
        _set("output.uri", "s3://models/granite-tuned"),
        "only PersistentVolumeClaims are supported so far (s3:// is planned)",
        id="job-output-s3",
    ),
    pytest.param(
        RUN,
        _set("output", "gs://datasets/run"),
        "only PersistentVolumeClaims are supported so far",
        id="run-output-gs",
    ),
    pytest.param(
        JOB,
        _set("output.uri", "pvc://artifacts/models/../../etc"),
        "must not contain '..' path segments",
        id="job-output-dotdot",
    ),
    pytest.param(
        TAXONOMY,
        _set("output", "pvc://artifacts/taxonomies/.."),
        "must not contain '..' path segments",
        id="taxonomy-output-trailing-dotdot",
    ),
    pytest.param(
        JOB,
        _set("baseModel.uri", "pvc://../models/granite"),
        "must be pvc://<claim>/<path>, the claim a lowercase RFC 1123 name",
        id="job-model-dotdot-claim",
    ),
    pytest.param(
        JOB,
        _set("baseModel.uri", "pvc://Artifacts/models/granite"),
        "the claim a lowercase RFC 1123 name",
        id="job-model-uppercase-claim",
    ),
    pytest.param(
        JOB,
        _set("data.syntheticDataRunRef", {"name": "run"}),
        "set either data.syntheticDataRunRef or dataset URIs",
        id="job-two-data-sources",
    ),
    pytest.param(JOB, _set("phases", []), "phases must list at least one phase", id="job-no-phases"),
    pytest.param(
        JOB,
        _set("phases", [_phase(learningRate=0.5)]),
        "learning rate must be greater than 0 and at most 0.1",
        id="job-learning-rate",
    ),
    pytest.param(
        JOB,
        _set("phases", [_phase(warmupSteps=10, warmupRatio=0.1)]),
        "set at most one of warmupSteps or warmupRatio",
        id="job-two-warmups",
    ),
    pytest.param(
        JOB,
        _set("method", {"type": "lora", "lora": {"rank": 0}}),
        "spec.method.lora.rank: Invalid value: 0: "
        "spec.method.lora.rank in body should be greater than or equal to 1",
        id="job-lora-rank",
    ),
    pytest.param(
        JOB,
        _set("method", {"type": "full", "lora": {"rank": 8}}),
        "lora settings apply only to method.type lora or qlora",
        id="job-full-with-lora",
    ),
    pytest.param(
        JOB,
        lambda spec: spec.update(method={"type": "qlora"}, resources={"gpusPerNode": 0}),
        "method qlora needs CUDA GPUs: set resources.gpusPerNode to 1 or more",
        id="job-qlora-cpu",
    ),
    pytest.param(
        JOB,
        _set("resources.nodes", 100),
        "spec.resources.nodes in body should be less than or equal to 64",
        id="job-nodes",
    ),
    pytest.param(
        JOB,
        lambda spec: spec["data"].pop("skills"),
        "every phase's dataset must be given",
        id="job-phase-without-dataset",
    ),
    pytest.param(
        JOB,
        _set("phases", [_phase(), _phase(epochs=2)]),
        'spec.phases[1]: Duplicate value: {"name":"knowledge"}',
        id="job-duplicate-phase",
    ),
    pytest.param(
        JOB,
        _set("phases", [_phase(name="Knowledge")]),
        "must be a lowercase RFC 1123 label",
        id="job-phase-name",
    ),
    pytest.param(
        JOB,
        _set("resources.nodeSelector", {"pool": "gpu nodes"}),
        "must be a label value: letters, digits",
        id="job-node-selector-value",
    ),
    pytest.param(
        JOB,
        _set("resources.nodeSelector", {"node pool!": "gpu"}),
        "every key must be a label key",
        id="job-node-selector-key",
    ),
    pytest.param(
        TAXONOMY,
        _set("scheduling", {"tolerations": [{"key": "team/a b", "operator": "Exists"}]}),
        "must be a label key",
        id="taxonomy-toleration-key",
    ),
    pytest.param(
        JOB,
        _set("resources.tolerations", [{"key": "dedicated", "value": "-ml"}]),
        "must be a label value",
        id="job-toleration-value",
    ),
    pytest.param(
        RUN,
        _set("teacher.endpoint", {"url": "http://teacher:8000/v1?key=abc", "model": "m"}),
        "with a host and no query or fragment",
        id="run-teacher-url-query",
    ),
    pytest.param(
        RUN,
        _set("teacher.endpoint", {"url": "http://teacher:8000/v1", "model": "m", "maxReplyBytes": 100}),
        "maxReplyBytes in body should be greater than or equal to 4096",
        id="run-teacher-reply-bound",
    ),
    pytest.param(
        RUN,
        _set("leafFailurePolicy", "Ignore"),
        'supported values: "FailRun", "SkipLeaf"',
        id="run-leaf-failure-policy",
    ),
    pytest.param(
        JOB,
        _set("evaluation", {"gate": {"benchmark": "held-out", "minImprovement": 0.1}}),
        "evaluation.gate and evaluation.selectBy need benchmarks",
        id="job-gate-without-questions",
    ),
    pytest.param(
        JOB,
        _set("evaluation", {"benchmarks": [{"name": "mine"}]}),
        "a benchmark without a dataset uses the SyntheticDataRun's evaluation dataset",
        id="job-benchmark-without-dataset",
    ),
    pytest.param(
        JOB,
        _set(
            "evaluation",
            {
                "benchmarks": [{"name": "mine", "dataset": "pvc://data/q.jsonl"}],
                "gate": {"benchmark": "other"},
            },
        ),
        "evaluation.gate.benchmark must name one of evaluation.benchmarks",
        id="job-gate-unknown-benchmark",
    ),
    pytest.param(
        JOB,
        _set(
            "evaluation",
            {
                "benchmarks": [{"name": "mine", "dataset": "pvc://data/q.jsonl", "generation": False}],
                "selectBy": {"benchmark": "mine", "metric": "rougeL"},
            },
        ),
        "evaluation.selectBy: its benchmark does not compute that metric",
        id="job-select-by-uncomputed-metric",
    ),
    pytest.param(
        JOB,
        _set(
            "evaluation",
            {
                "benchmarks": [
                    {"name": "a", "dataset": "pvc://data/q.jsonl"},
                    {"name": "a", "dataset": "pvc://d/r.jsonl"},
                ]
            },
        ),
        'spec.evaluation.benchmarks[1]: Duplicate value: {"name":"a"}',
        id="job-duplicate-benchmarks",
    ),
    pytest.param(
        JOB,
        _set(
            "evaluation",
            {
                "benchmarks": [{"name": "mine", "dataset": "pvc://data/q.jsonl"}],
                "gate": {"benchmark": "mine", "metric": "accuracy"},
            },
        ),
        "evaluation.gate: its benchmark does not compute that metric (nll needs a reference benchmark",
        id="job-gate-accuracy-of-a-reference-benchmark",
    ),
    pytest.param(
        JOB,
        _set(
            "evaluation",
            {
                "benchmarks": [{"name": "mcq", "type": "multipleChoice", "dataset": "pvc://data/c.jsonl"}],
                "selectBy": {"benchmark": "mcq", "metric": "rougeL"},
            },
        ),
        "evaluation.selectBy: its benchmark does not compute that metric",
        id="job-select-by-rouge-of-a-multiple-choice-benchmark",
    ),
    pytest.param(
        JOB,
        lambda spec: spec.update(
            data={"syntheticDataRunRef": {"name": "run"}},
            evaluation={"gate": {"benchmark": "multiple-choice", "metric": "nll"}},
        ),
        "evaluation.gate: its benchmark does not compute that metric",
        id="job-gate-nll-of-the-default-multiple-choice-benchmark",
    ),
    pytest.param(
        JOB,
        _set("evaluation", {"benchmarks": [{"name": "mcq", "type": "judge", "dataset": "pvc://d/c.jsonl"}]}),
        'supported values: "reference", "multipleChoice"',
        id="job-unknown-benchmark-type",
    ),
    pytest.param(
        JOB,
        _set(
            "evaluation",
            {
                "benchmarks": [
                    {
                        "name": "mine",
                        "dataset": "pvc://data/q.jsonl",
                        "generation": False,
                        "judge": {"endpoint": {"url": "http://judge:8000/v1", "model": "j"}},
                    }
                ]
            },
        ),
        "a judge grades generated answers: it needs type reference and generation",
        id="job-judge-without-generation",
    ),
    pytest.param(
        JOB,
        _set(
            "evaluation",
            {
                "benchmarks": [{"name": "mine", "dataset": "pvc://data/q.jsonl"}],
                "gate": {"benchmark": "mine", "metric": "judge"},
            },
        ),
        "evaluation.gate: its benchmark does not compute that metric",
        id="job-gate-judge-without-a-judge",
    ),
    pytest.param(
        RUN,
        _set(
            "evaluation",
            {
                "multipleChoice": {
                    "pipeline": {"builtin": "multiple-choice", "configMapRef": {"name": "p", "key": "k"}}
                }
            },
        ),
        "set either evaluation.multipleChoice.pipeline.builtin or .configMapRef, not both",
        id="run-multiple-choice-two-pipelines",
    ),
    pytest.param(
        RUN,
        _set("evaluation", {"multipleChoice": {"questionsPerChunk": 50}}),
        "questionsPerChunk in body should be less than or equal to 20",
        id="run-multiple-choice-too-many-questions",
    ),
    pytest.param(
        RUN,
        _set("evaluation", {"heldOutSeeds": 1, "heldOutSeedFraction": 0.2}),
        "set at most one of evaluation.heldOutSeeds or evaluation.heldOutSeedFraction",
        id="run-held-out-count-and-fraction",
    ),
]


@pytest.mark.parametrize(("base", "change", "message"), BAD_INPUT)
def test_bad_input_is_rejected_with_a_clear_message(
    api_client: client.ApiClient,
    namespace: str,
    base: dict[str, Any],
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    with pytest.raises(ApiException) as rejected:
        _create(api_client, namespace, _with(base, change))
    assert rejected.value.status == 422
    details = json.loads(rejected.value.body)["message"]
    assert message in details


def test_the_valid_bases_are_accepted(api_client: client.ApiClient, namespace: str) -> None:
    # Guards the rejection tests: each fails for its own change, not for a broken base.
    for body in (TAXONOMY, RUN, JOB):
        _create(api_client, namespace, copy.deepcopy(body))


def test_a_multiple_choice_gate_is_accepted_and_defaulted(
    api_client: client.ApiClient, namespace: str
) -> None:
    job = copy.deepcopy(JOB)
    job["metadata"]["name"] = "mcq"
    job["spec"]["data"] = {"syntheticDataRunRef": {"name": "run"}}
    job["spec"]["evaluation"] = {
        "gate": {"benchmark": "multiple-choice", "metric": "accuracy", "minImprovement": 0.05},
        "selectBy": {"benchmark": "held-out", "metric": "rougeL"},
    }
    spec = _create(api_client, namespace, job)["spec"]
    assert spec["evaluation"]["gate"]["metric"] == "accuracy"
    listed = copy.deepcopy(JOB)
    listed["metadata"]["name"] = "mcq-listed"
    listed["spec"]["evaluation"] = {
        "benchmarks": [{"name": "mcq", "type": "multipleChoice", "dataset": "pvc://data/c.jsonl"}],
        "gate": {"benchmark": "mcq", "metric": "accuracyNorm"},
    }
    (benchmark,) = _create(api_client, namespace, listed)["spec"]["evaluation"]["benchmarks"]
    assert benchmark["type"] == "multipleChoice"


def test_examples_are_accepted_and_defaulted(api_client: client.ApiClient, namespace: str) -> None:
    created = {}
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        created[body["kind"]] = _create(api_client, namespace, body)
    assert set(created) == set(PLURALS)
    job = created["TuningJob"]["spec"]
    assert job["checkpoints"]["keep"] == 3  # nested default filled in by the API server
    assert job["evaluation"]["heldOutFraction"] == 0.05
    assert job["evaluation"]["gate"] == {"benchmark": "held-out", "metric": "nll", "minImprovement": 0.05}
    run = created["SyntheticDataRun"]["spec"]
    assert run["evaluation"] == {
        "heldOutSeeds": 1,
        "multipleChoice": {"questionsPerChunk": 3, "pipeline": {}},
    }
    assert run["suspend"] is False
    assert run["scale"]["samplesPerSeed"] == 30


def test_defaults_fill_a_minimal_tuning_job(api_client: client.ApiClient, namespace: str) -> None:
    spec = _create(api_client, namespace, copy.deepcopy(JOB))["spec"]
    assert spec["method"] == {"type": "lora"}
    assert [(p["name"], p["dataset"], p["learningRate"]) for p in spec["phases"]] == [
        ("knowledge", "knowledge", 0.0002),
        ("skills", "skills", 0.0001),
    ]
    assert spec["resources"]["gpusPerNode"] == 1
    assert spec["backoffLimit"] == 3


def _patch_status(
    api_client: client.ApiClient, namespace: str, kind: str, name: str, status: dict[str, Any]
) -> None:
    _objects(api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURALS[kind], name, {"status": status}
    )


def _patch_spec(
    api_client: client.ApiClient, namespace: str, kind: str, name: str, spec: dict[str, Any]
) -> None:
    _objects(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], name, {"spec": spec}
    )


@pytest.mark.parametrize("base", [RUN, JOB], ids=["SyntheticDataRun", "TuningJob"])
def test_spec_is_immutable_once_started_except_suspend(
    api_client: client.ApiClient, namespace: str, base: dict[str, Any]
) -> None:
    kind, name = base["kind"], base["metadata"]["name"]
    _create(api_client, namespace, copy.deepcopy(base))
    change = {"backoffLimit": 5}
    _patch_spec(api_client, namespace, kind, name, change)  # not started: editable

    _patch_status(api_client, namespace, kind, name, {"startTime": "2026-11-24T07:00:00Z"})
    with pytest.raises(ApiException) as rejected:
        _patch_spec(api_client, namespace, kind, name, {"backoffLimit": 6})
    assert rejected.value.status == 422
    assert f"spec is immutable once the {kind} has started" in json.loads(rejected.value.body)["message"]
    with pytest.raises(ApiException):
        _patch_spec(api_client, namespace, kind, name, {"activeDeadlineSeconds": 60})  # adding a field

    _patch_spec(api_client, namespace, kind, name, {"suspend": True})
    current = _objects(api_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], name
    )
    assert current["spec"]["suspend"] is True
    assert current["spec"]["backoffLimit"] == 5


@pytest.mark.parametrize("base", [RUN, JOB], ids=["SyntheticDataRun", "TuningJob"])
def test_managed_by_is_set_at_creation_or_never(
    api_client: client.ApiClient, namespace: str, base: dict[str, Any]
) -> None:
    kind = base["kind"]
    unmanaged = copy.deepcopy(base)
    _create(api_client, namespace, unmanaged)
    with pytest.raises(ApiException) as rejected:  # not even before the start
        _patch_spec(api_client, namespace, kind, unmanaged["metadata"]["name"], {"managedBy": "x.io/y"})
    assert rejected.value.status == 422
    assert "spec.managedBy is immutable" in json.loads(rejected.value.body)["message"]
    managed = copy.deepcopy(base)
    managed["metadata"]["name"] += "-managed"
    managed["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    _create(api_client, namespace, managed)
    with pytest.raises(ApiException):
        _patch_spec(api_client, namespace, kind, managed["metadata"]["name"], {"managedBy": None})
    bad = copy.deepcopy(base)
    bad["metadata"]["name"] += "-bad"
    bad["spec"]["managedBy"] = "not a path"
    with pytest.raises(ApiException) as invalid:
        _create(api_client, namespace, bad)
    assert "must be a domain-prefixed path" in json.loads(invalid.value.body)["message"]


def test_status_is_written_only_through_the_status_subresource(
    api_client: client.ApiClient, namespace: str
) -> None:
    objects = _objects(api_client)
    body = copy.deepcopy(JOB)
    body["status"] = {"state": "Succeeded"}
    created = _create(api_client, namespace, body)
    assert "status" not in created  # dropped on create

    created["status"] = {"state": "Failed"}
    updated = objects.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningjobs", "job", created
    )
    assert "status" not in updated  # ignored on the main resource

    _patch_status(api_client, namespace, "TuningJob", "job", {"state": "Running"})
    current = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "tuningjobs", "job")
    assert current["status"]["state"] == "Running"

    with pytest.raises(ApiException) as rejected:
        _patch_status(api_client, namespace, "TuningJob", "job", {"state": "Exploded"})
    assert 'Unsupported value: "Exploded"' in json.loads(rejected.value.body)["message"]


def _words(text: str) -> str:
    return " ".join(text.split())  # explain wraps descriptions


def _kubectl(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [KUBECTL, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kubectl_shows_printer_columns(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    _create(api_client, namespace, copy.deepcopy(JOB))
    _patch_status(
        api_client,
        namespace,
        "TuningJob",
        "job",
        {
            "state": "Running",
            "currentPhase": "skills",
            "progress": {"percent": 42, "step": 420, "totalSteps": 1000},
            "metrics": {"loss": 1.25, "evalLoss": 1.5},
            "evaluation": {
                "benchmarks": [
                    {"name": "held-out", "examples": 3, "base": {"nll": 1.75}, "tuned": {"nll": 0.25}}
                ],
                "checkpoint": {
                    "phase": "skills",
                    "step": 8,
                    "uri": "pvc://a/b",
                    "selectedBy": "evalLoss",
                    "candidates": 1,
                },
                "summary": "pvc://a/b/evaluation/summary.json",
                "seconds": 2.5,
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Running",
                    "message": "training",
                    "lastTransitionTime": "2026-11-24T07:00:00Z",
                },
                {
                    "type": "Evaluated",
                    "status": "True",
                    "reason": "GatePassed",
                    "message": "held-out nll 1.75 → 0.25",
                    "lastTransitionTime": "2026-11-24T07:00:00Z",
                },
            ],
        },
    )
    table = _kubectl(kubeconfig, "get", "tj", "-n", namespace).splitlines()
    assert table[0].split() == [
        "NAME", "STATE", "METHOD", "PHASE", "PROGRESS%", "LOSS", "TUNED-NLL", "EVALUATED", "AGE"
    ]  # fmt: skip
    assert table[1].split()[:8] == ["job", "Running", "lora", "skills", "42", "1.25", "0.25", "GatePassed"]
    wide = _kubectl(kubeconfig, "get", "tuningjobs", "-n", namespace, "-o", "wide").splitlines()
    assert wide[0].split()[-8:] == [
        "LOSS", "EVAL-LOSS", "BASE-NLL", "TUNED-NLL", "EVALUATED", "GPUS", "READY", "AGE"
    ]  # fmt: skip
    assert wide[1].split()[-8:-1] == ["1.25", "1.5", "1.75", "0.25", "GatePassed", "1", "False"]

    _create(api_client, namespace, copy.deepcopy(TAXONOMY))
    everything = _kubectl(kubeconfig, "get", "labtune", "-n", namespace)  # the category
    assert "taxonomy.labtune.io/tax" in everything
    assert "tuningjob.labtune.io/job" in everything
    assert "tax" in _kubectl(kubeconfig, "get", "tax", "-n", namespace)


def test_kubectl_explain_teaches_the_fields(kubeconfig: Path, labtune_crds: list[str]) -> None:
    spec = _kubectl(kubeconfig, "explain", "tuningjob.spec")
    for field in ("baseModel", "data", "method", "phases", "resources", "suspend", "activeDeadlineSeconds"):
        assert field in spec
    assert "Immutable once the job has started, except `suspend`" in _words(spec)
    rank = _kubectl(kubeconfig, "explain", "tuningjob.spec.method.lora.rank")
    assert "Adapter rank r." in rank
    url = _kubectl(kubeconfig, "explain", "taxonomy.spec.source.git.url")
    assert "Repository URL: `https://…`, `ssh://…` or `git@host:org/repo.git`." in _words(url)
