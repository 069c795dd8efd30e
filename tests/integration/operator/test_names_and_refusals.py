"""Every name the API server accepts works, and a child it will not create is a condition with its
words (issue 12, class 2) — on the real API server, with the Job controller making the pods."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubetest import Cluster, Kubelet, condition, eventually, tuning_job

from labtune.api import GROUP, VERSION
from labtune.operator.children.child_names import child_name, dns_label_name, label_value, service_name

pytestmark = pytest.mark.usefixtures("operator_process")

LONGEST = "granite." + "r" * 244  # 253 characters: the most a resource name may have
SUMMARY = {
    "output": {"adapter": "pvc://labtune-artifacts/out/adapter", "adapterSha256": "a" * 64},
    "metrics": {"loss": 0.9},
    "steps": 1,
    "tokens": 10,
    "checkpoints": [],
}


def _labels_valid(labels: dict[str, str]) -> bool:
    return all(len(value) <= 63 for value in labels.values())


def test_the_longest_name_works_for_a_tuning_job(cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.create(tuning_job(LONGEST))
    job_name = dns_label_name(LONGEST, "train", 60)
    job = cluster.job(job_name)
    assert _labels_valid(job["metadata"]["labels"])
    assert job["metadata"]["labels"][f"{GROUP}/tuningjob"] == label_value(LONGEST)
    assert job["metadata"]["annotations"][f"{GROUP}/tuningjob"] == LONGEST
    running = cluster.status_when("tuningjobs", LONGEST, lambda s: s.get("jobName") == job_name, "jobName")
    assert running["state"] in ("Pending", "Running")
    kubelet.finish(job_name, 0, json.dumps(SUMMARY))
    done = cluster.status_when("tuningjobs", LONGEST, lambda s: s.get("state") == "Succeeded", "success")
    assert done["output"]["adapter"] == SUMMARY["output"]["adapter"]
    assert {e.reason for e in cluster.events(LONGEST)} >= {"Succeeded"}


def test_a_multi_node_run_of_a_long_dotted_name_gets_its_pods_and_service(cluster: Cluster) -> None:
    """The Job controller names an Indexed Job's pods as hosts `<job>-<index>`: the API server
    accepts them, and the Service (a DNS-1035 label) exists, for a name starting with a digit."""
    name = "7b." + "x" * 240
    cluster.create(tuning_job(name, resources={"gpusPerNode": 0, "nodes": 2}))
    job_name = dns_label_name(name, "train", 60)
    cluster.job(job_name)
    service = cluster.core.read_namespaced_service(service_name(name, "train"), cluster.namespace)
    assert service.spec.selector[f"{GROUP}/tuningjob"] == label_value(name)

    def pods() -> list[Any] | None:
        found = cluster.core.list_namespaced_pod(cluster.namespace, label_selector=f"job-name={job_name}")
        return found.items if len(found.items) == 2 else None

    hosts = sorted(p.spec.hostname for p in eventually(pods, what="both pods of the Indexed Job"))
    assert hosts == [f"{job_name}-0", f"{job_name}-1"]
    assert {p.spec.subdomain for p in pods() or []} == {service.metadata.name}


def test_the_longest_names_work_for_a_taxonomy_and_a_run_on_it(cluster: Cluster) -> None:
    taxonomy = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Taxonomy",
        "metadata": {"name": LONGEST},
        "spec": {"source": {"git": {"url": "https://git.example.com/taxonomy.git"}}},
    }
    cluster.create(taxonomy)

    def sync_job() -> dict[str, Any] | None:
        jobs = cluster.batch.list_namespaced_job(
            cluster.namespace,
            label_selector=f"{GROUP}/taxonomy={label_value(LONGEST)}",
            _preload_content=False,
        )
        items = json.loads(jobs.data)["items"]
        return items[0] if items else None

    job = eventually(sync_job, what="the sync Job of the longest Taxonomy name")
    assert job["metadata"]["name"].startswith(child_name(LONGEST, "sync-")[:40])
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["annotations"][f"{GROUP}/taxonomy"] == LONGEST
    status = cluster.status_when(
        "taxonomies", LONGEST, lambda s: condition(s, "Reconciling").get("status") == "True", "reconciling"
    )
    # This cluster has no artifact claim: the sync pod waits for it, and says so.
    assert condition(status, "Reconciling")["reason"] in ("Syncing", "ClaimNotFound")
    assert condition(status, "Ready")["status"] == "False"
    run = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SyntheticDataRun",
        "metadata": {"name": LONGEST},
        "spec": {
            "taxonomyRef": {"name": LONGEST},
            "teacher": {"endpoint": {"url": "http://teacher:8000/v1", "model": "m"}},
        },
    }
    cluster.create(run)
    waiting = cluster.status_when(
        "syntheticdataruns", LONGEST, lambda s: s.get("state") == "Waiting", "waiting for its taxonomy"
    )
    assert condition(waiting, "Ready")["reason"] == "WaitingForTaxonomy"


JOBS_CREATED = {
    "apiGroups": ["batch"],
    "apiVersions": ["v1"],
    "operations": ["CREATE"],
    "resources": ["jobs"],
}
NOT_NAMED = "!object.metadata.name.startsWith('%s')"


@pytest.fixture
def policy(api_client: client.ApiClient, cluster: Cluster) -> Iterator[None]:
    """A ValidatingAdmissionPolicy of the kind cluster admins write (in-tree CEL): Jobs whose name
    starts with `deny-` are rejected as invalid, those starting with `forbid-` as forbidden."""
    admission = client.AdmissionregistrationV1Api(api_client)
    name = f"labtune-test-{cluster.namespace}"
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [JOBS_CREATED]},
                "validations": [
                    {"expression": NOT_NAMED % "deny-", "message": "Jobs named deny-* are not allowed here"},
                    {"expression": NOT_NAMED % "forbid-", "message": "no Jobs here", "reason": "Forbidden"},
                ],
            },
        }
    )  # fmt: skip
    admission.create_validating_admission_policy_binding(
        {
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.namespace}}
                },
            },
        }
    )
    batch = client.BatchV1Api(api_client)
    pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
    probe = {"metadata": {"name": "deny-probe"}, "spec": {"template": {"spec": pod}}}

    def enforced() -> bool | None:  # the policy takes effect once the API server has compiled it
        try:
            batch.create_namespaced_job(cluster.namespace, probe, dry_run="All")
        except client.ApiException as error:
            return True if error.status == 422 else None
        return None

    eventually(enforced, what="the admission policy in force")
    yield
    admission.delete_validating_admission_policy_binding(name)
    admission.delete_validating_admission_policy(name)


@pytest.mark.usefixtures("policy")
def test_a_job_the_api_server_rejects_is_a_condition_and_an_event(cluster: Cluster) -> None:
    cluster.create(tuning_job("deny"))
    status = cluster.status_when(
        "tuningjobs", "deny", lambda s: condition(s, "Ready").get("reason") == "JobInvalid", "JobInvalid"
    )
    ready = condition(status, "Ready")
    assert "refused to create Job deny-train" in ready["message"]
    assert "Jobs named deny-* are not allowed here" in ready["message"]
    assert status["state"] == "Waiting"
    assert condition(status, "Stalled")["status"] == "True"
    eventually(lambda: "JobInvalid" in {e.reason for e in cluster.events("deny")} or None, what="an Event")


@pytest.mark.usefixtures("policy")
def test_a_sync_job_the_api_server_forbids_is_a_condition_on_the_taxonomy(cluster: Cluster) -> None:
    taxonomy = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Taxonomy",
        "metadata": {"name": "forbid"},
        "spec": {"source": {"git": {"url": "https://git.example.com/taxonomy.git"}}},
    }
    cluster.create(taxonomy)
    status = cluster.status_when(
        "taxonomies",
        "forbid",
        lambda s: condition(s, "Ready").get("reason") == "JobForbidden",
        "JobForbidden",
    )
    assert "no Jobs here" in condition(status, "Ready")["message"]
    assert condition(status, "Stalled")["reason"] == "JobForbidden"


def test_an_exhausted_quota_waits_and_the_run_starts_when_it_frees(cluster: Cluster) -> None:
    quota = {"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}}
    cluster.core.create_namespaced_resource_quota(cluster.namespace, quota)
    eventually(
        lambda: cluster.core.read_namespaced_resource_quota("no-jobs", cluster.namespace).status.hard or None,
        what="the quota controller to count the namespace",
    )
    cluster.create(tuning_job("quota"))
    status = cluster.status_when(
        "tuningjobs",
        "quota",
        lambda s: condition(s, "Ready").get("reason") == "QuotaExceeded",
        "QuotaExceeded",
    )
    assert "exceeded quota: no-jobs" in condition(status, "Ready")["message"]
    assert condition(status, "Stalled").get("status") != "True"  # it frees up by itself
    cluster.core.delete_namespaced_resource_quota("no-jobs", cluster.namespace)
    cluster.job("quota-train")  # the resync (every 5 s here) tries again
    cluster.status_when(
        "tuningjobs", "quota", lambda s: s.get("jobName") == "quota-train", "jobName", timeout=60
    )


def test_a_child_name_taken_by_another_object_is_never_adopted(cluster: Cluster) -> None:
    cluster.core.create_namespaced_config_map(
        cluster.namespace, {"metadata": {"name": "taken-train"}, "data": {"config.yaml": "mine"}}
    )
    cluster.create(tuning_job("taken"))
    status = cluster.status_when(
        "tuningjobs",
        "taken",
        lambda s: condition(s, "Ready").get("reason") == "ConfigMapNameTaken",
        "ConfigMapNameTaken",
    )
    assert "ConfigMap taken-train exists and belongs to no owner" in condition(status, "Ready")["message"]
    mine = cluster.core.read_namespaced_config_map("taken-train", cluster.namespace)
    assert mine.data == {"config.yaml": "mine"}
    assert not cluster.batch.list_namespaced_job(cluster.namespace).items
