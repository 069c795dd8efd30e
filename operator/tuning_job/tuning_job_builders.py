"""What a TuningJob is run with: the trainer's config file, and its children (ConfigMap, a headless
Service and torchrun's rendezvous across nodes, the Indexed Job). Pure functions of the spec and the
settings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from labtune.api import TuningJob
from labtune.api.tuning_job_types import (
    EvaluationSpec,
)
from labtune.contract.evaluate import judge_api_key_env, judge_ca_file
from labtune.contract.train import Datasets, Distributed, ModelSource, TrainConfig
from labtune.operator.children.child_names import (
    MAX_INDEXED_JOB_NAME,
    child_labels,
    child_metadata,
    default_output,
    dns_label_name,
    selector,
    service_name,
)
from labtune.operator.children.job_builders import build_config_map, build_headless_service, build_job
from labtune.operator.children.pod_template import CONFIG_PATH, FileMount, PodRequest, build_pod_template
from labtune.operator.settings import OperatorSettings

COMPONENT = "trainer"
RENDEZVOUS_PORT = 29500
TRAINER_GRACE_SECONDS = 300
"""After SIGTERM the trainer saves a checkpoint before it exits; Kubernetes' default 30 s is too
short for the optimizer state of a large model on a network volume."""
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def build_train_config(
    job: TuningJob, datasets: Datasets, evaluation: EvaluationSpec, output: str, settings: OperatorSettings
) -> TrainConfig:
    """The trainer's config file, rendered from the spec (with the evaluation resolved)."""
    spec = job.spec
    return TrainConfig(
        artifact_root=settings.artifact_root,
        metrics_port=settings.job_metrics_port,
        base_model=ModelSource(uri=spec.base_model.uri, chat_template=spec.base_model.chat_template),
        datasets=datasets,
        method=spec.method,
        phases=spec.phases,
        evaluation=evaluation,
        checkpoints=spec.checkpoints,
        output=output,
        merge_adapter=spec.output.merge_adapter,
        # `labtune train` itself starts torchrun when there is more than one process, so that the
        # exit codes the pod failure policy reads (config error, preempted) survive the launcher.
        distributed=Distributed(
            nodes=spec.resources.nodes, procs_per_node=max(spec.resources.gpus_per_node, 1)
        ),
    )


def _rendezvous_env(job: TuningJob, job_name: str, service: str) -> tuple[dict[str, Any], ...]:
    """Across nodes, where torchrun (started by `labtune train`) meets: node 0 of the Indexed Job.
    Within one node the trainer starts torchrun standalone and needs nothing from here."""
    if job.spec.resources.nodes == 1:
        return ()
    return (
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}},
        # Pods of an Indexed Job with a subdomain resolve as <job>-<index>.<service>.
        {"name": "MASTER_ADDR", "value": f"{job_name}-0.{service}"},
        {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
    )


def _judge_credentials(config: TrainConfig) -> tuple[tuple[dict[str, Any], ...], tuple[FileMount, ...]]:
    """Each judge's API key (an env var from its Secret, the name `labtune evaluate` reads) and CA
    bundle (a Secret volume where it looks): the operator never reads either."""
    env: list[dict[str, Any]] = []
    files: list[FileMount] = []
    for benchmark in config.evaluation.benchmarks or []:
        endpoint = benchmark.judge.endpoint if benchmark.judge else None
        if endpoint and endpoint.api_key_secret_ref:
            ref = endpoint.api_key_secret_ref
            key = {"secretKeyRef": {"name": ref.name, "key": ref.key}}
            env.append({"name": judge_api_key_env(benchmark.name), "valueFrom": key})
        if endpoint and endpoint.ca_secret_ref:
            ref = endpoint.ca_secret_ref
            folder, name = judge_ca_file(benchmark.name).rsplit("/", 1)
            files.append(FileMount("secret", ref.name, folder, ((ref.key, name),)))
    return tuple(env), tuple(files)


def build_trainer_children(
    body: Mapping[str, Any], job: TuningJob, config: TrainConfig, settings: OperatorSettings
) -> tuple[dict[str, Any], ...]:
    """ConfigMap, (headless Service,) Job — the Job last, so that it never starts without its config."""
    name = dns_label_name(body["metadata"]["name"], "train", MAX_INDEXED_JOB_NAME)
    service = service_name(body["metadata"]["name"], "train")
    resources = job.spec.resources
    uris = [
        config.base_model.uri,
        config.output,
        *(u for u in (config.datasets.knowledge, config.datasets.skills) if u),
        *(b.dataset for b in config.evaluation.benchmarks or [] if b.dataset),
    ]
    distributed = resources.nodes > 1
    judge_env, judge_files = _judge_credentials(config)
    request = PodRequest(
        component=COMPONENT,
        image=settings.trainer_image,
        args=("train", "--config", CONFIG_PATH),
        config_map=name,
        scheduling=resources,
        gpus=resources.gpus_per_node,
        artifact_uris=tuple(uris),
        env=_rendezvous_env(job, name, service) + judge_env,
        files=judge_files,
        subdomain=service if distributed else None,
        grace_seconds=TRAINER_GRACE_SECONDS,
    )
    labels = child_labels(body, COMPONENT)
    meta = child_metadata(body, name, COMPONENT)
    template = build_pod_template(labels, request, settings)
    children: list[dict[str, Any]] = [build_config_map(meta, config)]
    if distributed:
        pods = selector(body["kind"], body["metadata"]["name"])
        children.append(build_headless_service({**meta, "name": service}, pods, RENDEZVOUS_PORT))
    children.append(build_job(meta, template, job.spec, completions=resources.nodes))
    return tuple(children)


def build_trainer_plan(
    body: Mapping[str, Any],
    job: TuningJob,
    datasets: Datasets,
    evaluation: EvaluationSpec,
    settings: OperatorSettings,
) -> tuple[TrainConfig, tuple[dict[str, Any], ...]]:
    """The trainer config and the children that run it, once the datasets are known."""
    output = job.spec.output.uri or default_output(body, settings.artifact_claim)
    config = build_train_config(job, datasets, evaluation, output, settings)
    return config, build_trainer_children(body, job, config, settings)


def _config_digest(config: TrainConfig) -> str:
    canonical = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()
