"""Every name the API server accepts works (issue 12, class 2): label values, child names within
their own limits, and a child that cannot be created named on its owner."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from labtune.api import GROUP, VERSION, TuningJob
from labtune.contract.train import Datasets
from labtune.operator.children.child_names import (
    MAX_INDEXED_JOB_NAME,
    child_metadata,
    child_name,
    default_output,
    dns_label_name,
    label_value,
    selector,
    service_name,
)
from labtune.operator.children.job_observe import not_ours, refusal
from labtune.operator.settings import OperatorSettings
from labtune.operator.tuning_job.tuning_job_builders import build_trainer_plan

# The API server's own patterns (k8s.io/apimachinery validation).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

LONGEST = "r" * 200 + "." + "x" * 52  # 253 characters, the longest resource name
NAMES = [
    "granite",
    "7b-lora",  # starts with a digit: fine for a Job, not for a Service
    "team.a.granite",  # dots: fine for a resource name, not for a DNS label
    "a" * 63,
    "a" * 64,
    LONGEST,
    "1" + "-." * 125 + "z",  # 253 characters of separators
]


def _body(name: str, kind: str = "TuningJob", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "namespace": "team", "uid": "0123456789abcdef", "generation": 1},
        "spec": {
            "baseModel": {"uri": "pvc://models/smollm2"},
            "data": {"knowledge": "pvc://data/k.jsonl", "skills": "pvc://data/s.jsonl"},
            "resources": {"gpusPerNode": 0},
            **spec,
        },
    }


@pytest.mark.parametrize("name", NAMES)
def test_label_values_stay_valid_and_distinct(name: str) -> None:
    value = label_value(name)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value), value
    assert value == label_value(name)
    assert (value == name) == (len(name) <= 63)
    assert label_value(name + "b") != value or len(name) + 1 <= 63


def test_long_names_sharing_a_prefix_get_different_labels_and_children() -> None:
    one, two = "p" * 100 + "-one", "p" * 100 + "-two"
    assert label_value(one) != label_value(two)
    assert child_name(one, "train") != child_name(two, "train")
    assert dns_label_name("a.b", "train") != dns_label_name("a-b", "train")


@pytest.mark.parametrize("name", NAMES)
def test_child_names_fit_their_own_limits(name: str) -> None:
    assert len(child_name(name, "generate")) <= 63
    job = dns_label_name(name, "train", MAX_INDEXED_JOB_NAME)
    assert DNS_1123_LABEL.match(job), job
    assert len(f"{job}-63") <= 63  # the host name of the last pod of an Indexed Job
    service = service_name(name, "train")
    assert DNS_1035_LABEL.match(service), service
    assert len(service) <= 63


def test_short_names_keep_their_children_names() -> None:
    """Names that worked before keep their children (a running run is found again after upgrade)."""
    assert child_name("granite", "train") == "granite-train"
    assert dns_label_name("granite", "train") == "granite-train"
    assert service_name("multi", "train") == "multi-train"
    assert service_name("7b", "train") == "s7b-train"


@pytest.mark.parametrize("name", NAMES)
def test_children_carry_the_full_name_in_an_annotation(name: str) -> None:
    meta = child_metadata(_body(name), child_name(name, "train"), "trainer")
    assert meta["annotations"] == {f"{GROUP}/tuningjob": name}
    assert meta["labels"][f"{GROUP}/tuningjob"] == label_value(name)
    assert meta["ownerReferences"][0]["name"] == name
    assert selector("TuningJob", name)[f"{GROUP}/tuningjob"] == label_value(name)


@pytest.mark.parametrize("name", NAMES)
def test_default_output_is_one_path_segment_a_file_system_accepts(name: str) -> None:
    uri = default_output(_body(name), "labtune-artifacts")
    folder = uri.rsplit("/", 1)[1]
    assert len(folder.encode()) <= 255
    assert folder.endswith("-01234567")


@pytest.mark.parametrize("name", [LONGEST, "7b.lora"])
def test_a_multi_node_trainer_of_any_name_gets_valid_children(name: str) -> None:
    body = _body(name, resources={"gpusPerNode": 1, "nodes": 2})
    job = TuningJob.model_validate(body)
    datasets = Datasets(knowledge="pvc://data/k.jsonl", skills="pvc://data/s.jsonl")
    _, children = build_trainer_plan(body, job, datasets, job.spec.evaluation, OperatorSettings())
    config_map, service, trainer = children
    assert (config_map["kind"], service["kind"], trainer["kind"]) == ("ConfigMap", "Service", "Job")
    assert DNS_1035_LABEL.match(service["metadata"]["name"])
    pod = trainer["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == f"{trainer['metadata']['name']}-0.{service['metadata']['name']}"
    for labels in (trainer["metadata"]["labels"], trainer["spec"]["template"]["metadata"]["labels"]):
        assert all(len(v) <= 63 and LABEL_VALUE.match(v) for v in labels.values())


def _status(message: str, code: int) -> str:
    return json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": code})


JOB = {"kind": "Job", "metadata": {"name": "granite-train", "ownerReferences": [{"uid": "u1"}]}}


@pytest.mark.parametrize(
    ("status", "body", "reason", "lasting", "words"),
    [
        (422, _status('Job.batch "granite-train" is invalid: spec.template: Invalid value', 422),
         "JobInvalid", True, "is invalid: spec.template"),
        (400, _status("admission webhook denied the request: images must be signed", 400),
         "JobInvalid", True, "images must be signed"),
        (403, _status('jobs.batch "granite-train" is forbidden: exceeded quota: gpu, requested: '
                      "requests.nvidia.com/gpu=8, used: 0, limited: 4", 403),
         "QuotaExceeded", False, "limited: 4"),
        (403, _status('jobs.batch is forbidden: User "system:serviceaccount:labtune:op" cannot create', 403),
         "JobForbidden", True, "cannot create"),
        (403, "<html>forbidden by the proxy</html>", "JobForbidden", True, "forbidden by the proxy"),
    ],
)  # fmt: skip
def test_a_refused_child_becomes_a_named_reason(
    status: int, body: str, reason: str, lasting: bool, words: str
) -> None:
    refused = refusal(JOB, status, body)
    assert refused is not None
    assert (refused.reason, refused.lasting) == (reason, lasting)
    assert refused.message.startswith("the API server refused to create Job granite-train: ")
    assert words in refused.message


@pytest.mark.parametrize("status", [409, 429, 500, 503, 0])
def test_transient_api_failures_are_not_refusals(status: int) -> None:
    assert refusal(JOB, status, _status("try again", status)) is None


def test_a_child_of_another_owner_is_never_adopted() -> None:
    ours = {
        "kind": "Job",
        "metadata": {"name": "x-train", "ownerReferences": [{"uid": "u1", "kind": "TuningJob", "name": "x"}]},
    }

    def found(*owners: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": "x-train", "ownerReferences": list(owners)}}

    assert not_ours(ours, found({"uid": "u1", "kind": "TuningJob", "name": "x"})) is None
    by_hand = not_ours(ours, found())
    assert by_hand is not None
    assert (by_hand.reason, by_hand.lasting) == ("JobNameTaken", True)
    other = not_ours(ours, found({"uid": "u9", "kind": "SyntheticDataRun", "name": "y", "controller": True}))
    assert other is not None
    assert "belongs to SyntheticDataRun y" in other.message
    earlier = not_ours(ours, found({"uid": "u0", "kind": "TuningJob", "name": "x", "controller": True}))
    assert earlier is not None
    assert (earlier.lasting, "still being deleted" in earlier.message) == (False, True)
