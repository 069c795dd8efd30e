"""Pure pieces of the operator: names, conditions, durations, metric parsing, job observation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from labtune.operator import conditions as cond
from labtune.operator.children.child_names import MAX_NAME, child_name
from labtune.operator.children.job_observe import (
    failure_detail,
    mount_problem,
    pending_pods,
    start_problem,
    termination_message,
    view_job,
)
from labtune.operator.children.pod_metrics import parse
from labtune.operator.conditions import RunOutcome
from labtune.operator.taxonomy.taxonomy_builders import _seconds, sync_job_name


def test_child_names_are_deterministic_and_bounded() -> None:
    assert child_name("granite", "train") == "granite-train"
    long = "a" * 80
    name = child_name(long, "train")
    assert len(name) <= MAX_NAME
    assert name == child_name(long, "train")
    assert name != child_name("a" * 81, "train")
    assert name.endswith("-train")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert _seconds(text) == seconds


def test_a_sync_is_due_per_generation_and_interval_tick() -> None:
    first = sync_job_name("tax", 1, "10m", 6000.0)
    assert first == sync_job_name("tax", 1, "10m", 6599.0)  # same tick
    assert first != sync_job_name("tax", 1, "10m", 6600.0)  # next tick
    assert first != sync_job_name("tax", 2, "10m", 6000.0)  # spec changed
    assert sync_job_name("tax", 1, None, 0.0) == sync_job_name("tax", 1, None, 1e9)  # no interval


def _at(day: int) -> datetime:
    return datetime(2026, 1, day, tzinfo=UTC)


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    conditions = cond.set_condition([], "Ready", False, "Waiting", "", 1, _at(1))
    conditions = cond.set_condition(conditions, "Ready", False, "Other", "m", 2, _at(2))
    assert conditions[0].last_transition_time == _at(1)
    assert (conditions[0].reason, conditions[0].observed_generation) == ("Other", 2)
    conditions = cond.set_condition(conditions, "Ready", True, "Done", "", 2, _at(3))
    assert conditions[0].last_transition_time == _at(3)
    assert conditions[0].to_wire()["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_run_conditions_follow_the_state() -> None:
    running = cond.run_conditions([], RunOutcome("Running", "JobRunning", "1 pod"), 1, _at(1))
    by_type = {c.type: c for c in running}
    assert by_type["Running"].status == "True"
    assert (by_type["Ready"].status, by_type["Ready"].reason) == ("False", "JobRunning")
    assert by_type["Reconciling"].status == "True"
    assert "Stalled" not in by_type
    done = cond.run_conditions(running, RunOutcome("Succeeded", "Succeeded"), 1, _at(2))
    by_type = {c.type: c for c in done}
    assert by_type["Ready"].status == "True"
    assert by_type["Running"].status == "False"
    assert "Reconciling" not in by_type
    assert by_type["Succeeded"].last_transition_time == _at(2)
    assert by_type["Waiting"].last_transition_time == _at(1)  # False before, False now
    failed = cond.run_conditions(running, RunOutcome("Failed", "BackoffLimitExceeded", "x"), 1, _at(2))
    assert {c.type: c.status for c in failed}["Stalled"] == "True"


def test_prometheus_text_is_parsed() -> None:
    samples = parse(
        "# TYPE labtune_train_step gauge\nlabtune_train_step 7\n"
        "# TYPE labtune_generator_leaves_total gauge\nlabtune_generator_leaves_total 3\n"
        "# TYPE labtune_generator_samples_kept counter\nlabtune_generator_samples_kept_total 12\n"
        "# TYPE labtune_train_phase gauge\n"
        'labtune_train_phase{phase="skills"} 1\nlabtune_train_phase{phase="x"} 0\n'
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1\nh_sum 0.5\n'
    )
    assert samples.get("labtune_train_step") == 7
    assert samples.get("labtune_generator_leaves_total") == 3  # a gauge named like a counter
    assert samples.get("labtune_generator_samples_kept") == 12
    assert samples.labels["labtune_train_phase"] == {"phase": "skills"}
    assert samples.get("h") is None


def _pod(name: str, phase: str, created: str, terminated: dict[str, object] | None) -> dict[str, object]:
    state = {"terminated": terminated} if terminated else {"running": {}}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": [{"name": "main", "state": state}]},
    }


def test_termination_message_and_failure_detail_come_from_the_newest_pod() -> None:
    pods = [
        _pod("a", "Failed", "2026-01-01T00:00:00Z", {"exitCode": 1, "message": "old\n"}),
        _pod(
            "b", "Failed", "2026-01-01T00:01:00Z", {"exitCode": 78, "message": "trace\nerror: bad config\n"}
        ),
        _pod("c", "Succeeded", "2026-01-01T00:02:00Z", {"exitCode": 0, "message": '{"ok": 1}'}),
    ]
    assert failure_detail(pods) == "exit code 78: error: bad config"
    assert termination_message(pods, "Succeeded") == '{"ok": 1}'
    assert termination_message(pods[:2], "Succeeded") is None
    killed = _pod(
        "d", "Failed", "2026-01-01T00:03:00Z", {"exitCode": 137, "reason": "OOMKilled", "message": "step 3\n"}
    )
    assert failure_detail([killed]) == "exit code 137 (OOMKilled): step 3"


def test_job_view() -> None:
    job = {
        "metadata": {"name": "j"},
        "spec": {"suspend": False},
        "status": {
            "active": 0,
            "failed": 2,
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m"}
            ],
        },
    }
    view = view_job(job)
    assert (view.failed, view.complete, view.reason, view.failed_pods) == (
        True,
        False,
        "BackoffLimitExceeded",
        2,
    )


def _waiting(reason: str, message: str = "") -> dict[str, object]:
    waiting = {"reason": reason, "message": message} if message else {"reason": reason}
    return {
        "metadata": {"name": "run-x"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": "main", "state": {"waiting": waiting}}],
        },
    }


def test_start_problem_names_what_keeps_a_pod_from_running() -> None:
    pull = _waiting("ImagePullBackOff", 'Back-off pulling image "ghcr.io/labtune/trainer:9"')
    assert start_problem([pull]) == (
        "ImagePullBackOff",
        'pod run-x: container main: ImagePullBackOff: Back-off pulling image "ghcr.io/labtune/trainer:9"',
    )
    assert start_problem([_waiting("CrashLoopBackOff")]) == (
        "CrashLoopBackOff",
        "pod run-x: container main: CrashLoopBackOff: CrashLoopBackOff",
    )
    unschedulable = {
        "metadata": {"name": "run-y"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}
            ],
        },
    }  # fmt: skip
    assert start_problem([unschedulable]) == (
        "Unschedulable",
        "pod run-y: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
    )
    # Only starting: no problem to report.
    assert start_problem([_waiting("ContainerCreating")]) is None
    assert start_problem([_pod("z", "Running", "2026-01-01T00:00:00Z", None)]) is None


def _unschedulable(message: str) -> dict[str, object]:
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return {"metadata": {"name": "run-y"}, "status": {"phase": "Pending", "conditions": [condition]}}


# kubelet's and the scheduler's own words (v1.36) for objects a pod needs that do not exist.
CONFIG_ERROR, NOT_AVAILABLE = "CreateContainerConfigError", "0/1 nodes are available: "
MISSING = [
    (CONFIG_ERROR, 'secret "git-auth" not found', "SecretNotFound"),
    (CONFIG_ERROR, 'configmap "pipeline" not found', "ConfigMapNotFound"),
    (CONFIG_ERROR, "couldn't find key token in Secret ns/git-auth", CONFIG_ERROR),
    (None, NOT_AVAILABLE + 'persistentvolumeclaim "artifacts" not found. preemption: 0/1', "ClaimNotFound"),
    (None, NOT_AVAILABLE + "1 Insufficient nvidia.com/gpu.", "Unschedulable"),
    (None, NOT_AVAILABLE + "pod has unbound immediate PersistentVolumeClaims.", "Unschedulable"),
]


@pytest.mark.parametrize(
    ("waiting", "message", "reason"), MISSING, ids=[m[2] + str(i) for i, m in enumerate(MISSING)]
)
def test_start_problem_names_the_missing_object(waiting: str | None, message: str, reason: str) -> None:
    """A container waiting with kubelet's message, or (no waiting reason) a pod the scheduler cannot place."""
    pod = _waiting(waiting, message) if waiting else _unschedulable(message)
    problem = start_problem([pod])
    assert problem is not None
    assert problem[0] == reason
    assert message in problem[1]


def _event(
    message: str, when: str = "t1", reason: str = "FailedMount", kind: str = "Warning"
) -> dict[str, object]:
    involved = {"kind": "Pod", "name": "sync-x"}
    return {
        "type": kind,
        "reason": reason,
        "message": message,
        "lastTimestamp": when,
        "involvedObject": involved,
    }


SETUP = "MountVolume.SetUp failed for volume "
MOUNTS = [
    ([_event(SETUP + '"git" : secret "git-auth" not found')], "SecretNotFound"),
    ([_event(SETUP + '"config" : configmap "sync-x" not found')], "ConfigMapNotFound"),
    ([_event(SETUP + '"nfs" : mount failed: exit status 32')], "FailedMount"),
    # The newest FailedMount speaks: the Secret appeared, then the ConfigMap went missing.
    ([_event('secret "a" not found', "2026-01-01T01"), _event('configmap "b" not found', "2026-01-01T09")],
     "ConfigMapNotFound"),
    ([_event("assigned", reason="Scheduled", kind="Normal"), _event('secret "a"', kind="Normal")], None),
    ([], None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("events", "reason"), MOUNTS, ids=[f"{reason}{i}" for i, (_, reason) in enumerate(MOUNTS)]
)
def test_mount_problem_names_what_kubelet_cannot_mount(
    events: list[dict[str, object]], reason: str | None
) -> None:
    problem = mount_problem(events)
    if reason is None:
        assert problem is None
        return
    assert problem is not None
    assert problem[0] == reason
    assert problem[1].startswith("pod sync-x: ")


def test_pending_pods_are_those_kubelet_has_not_started() -> None:
    pods = [_waiting("ContainerCreating"), _pod("z", "Running", "2026-01-01T00:00:00Z", None)]
    assert pending_pods(pods) == ["run-x"]
