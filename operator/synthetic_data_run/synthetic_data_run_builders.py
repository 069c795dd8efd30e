"""What a SyntheticDataRun is run with: the generator's config file and its children (ConfigMap,
Job), with a vLLM server as a native sidecar when the teacher is a model rather than an endpoint.
Pure functions of the spec, its Taxonomy and the settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labtune.api import SyntheticDataRun, Taxonomy
from labtune.api.synthetic_data_run_types import CacheSpec, HoldOutSpec, TeacherModel
from labtune.contract import resolve_artifact
from labtune.contract.generate import (
    GenerateConfig,
    LeafCacheConfig,
    MultipleChoiceConfig,
    PipelineRef,
    TeacherConfig,
)
from labtune.contract.taxonomy_sync import GitCheckout
from labtune.operator.children.child_names import child_labels, child_metadata, child_name, dns_label_name
from labtune.operator.children.job_builders import build_config_map, build_job
from labtune.operator.children.pod_template import (
    CONFIG_PATH,
    CONTAINER_SECURITY,
    GPU_RESOURCE,
    FileMount,
    PodRequest,
    artifact_claims,
    artifact_mounts,
    build_pod_template,
)
from labtune.operator.settings import OperatorSettings

COMPONENT = "generator"
MIX_COMPONENT = "mix"
GIT_CREDENTIALS_DIR = "/var/run/secrets/labtune/git"
TEACHER_CA_DIR = "/var/run/secrets/labtune/teacher-ca"
PIPELINE_DIR = "/etc/labtune/pipeline"
CHOICE_PIPELINE_DIR = "/etc/labtune/multiple-choice-pipeline"
API_KEY_ENV = "LABTUNE_TEACHER_API_KEY"
VLLM_PORT = 8000
VLLM_MODEL_NAME = "teacher"
LEAF_CACHE_FOLDER = "labtune-cache/leaves"


def build_vllm_sidecar(teacher: TeacherModel, settings: OperatorSettings) -> dict[str, Any]:
    """A native sidecar (init container that keeps running) serving the teacher on localhost; its
    startup probe holds the generator back until the model is loaded."""
    args = [
        "--model",
        str(resolve_artifact(teacher.uri, settings.artifact_root)),
        "--served-model-name",
        VLLM_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(VLLM_PORT),
        "--tensor-parallel-size",
        str(teacher.gpus),
    ]
    if teacher.max_model_len:
        args += ["--max-model-len", str(teacher.max_model_len)]
    gpus = {GPU_RESOURCE: str(teacher.gpus)}
    probe = {"httpGet": {"path": "/health", "port": VLLM_PORT, "host": "127.0.0.1"}, "periodSeconds": 10}
    return {
        "name": "teacher",
        "image": settings.vllm_image,
        "imagePullPolicy": settings.image_pull_policy,
        "restartPolicy": "Always",
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"limits": gpus, "requests": gpus},
        "startupProbe": {**probe, "failureThreshold": 180},  # up to 30 minutes to load the weights
        "livenessProbe": {**probe, "failureThreshold": 6},
        "volumeMounts": [
            *artifact_mounts([teacher.uri], settings),
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": CONTAINER_SECURITY,
    }


def build_generate_config(
    run: SyntheticDataRun, taxonomy: Taxonomy, revision: str, output: str, settings: OperatorSettings
) -> GenerateConfig:
    spec, git = run.spec, taxonomy.spec.source.git
    teacher = spec.teacher
    if teacher.endpoint is not None:
        teacher_config = TeacherConfig(
            model=teacher.endpoint.model,
            url=teacher.endpoint.url,
            api_key_env=API_KEY_ENV if teacher.endpoint.api_key_secret_ref else None,
            ca_file=f"{TEACHER_CA_DIR}/ca.crt" if teacher.endpoint.ca_secret_ref else None,
            max_concurrency=spec.scale.max_concurrency,
            max_reply_bytes=teacher.endpoint.max_reply_bytes,
        )
    else:
        teacher_config = TeacherConfig(
            model=VLLM_MODEL_NAME,
            identity=teacher.model.uri if teacher.model else None,
            url=f"http://127.0.0.1:{VLLM_PORT}/v1",
            api_key_env=None,
            max_concurrency=spec.scale.max_concurrency,
        )
    pipeline = (
        PipelineRef(path=f"{PIPELINE_DIR}/pipeline.yaml")
        if spec.pipeline.config_map_ref
        else PipelineRef(builtin=spec.pipeline.builtin or "simple")
    )
    choices = spec.evaluation.multiple_choice
    multiple_choice = (
        MultipleChoiceConfig(
            questions_per_chunk=choices.questions_per_chunk,
            pipeline=PipelineRef(path=f"{CHOICE_PIPELINE_DIR}/pipeline.yaml")
            if choices.pipeline.config_map_ref
            else PipelineRef(builtin=choices.pipeline.builtin or "multiple-choice"),
        )
        if choices
        else None
    )
    return GenerateConfig(
        artifact_root=settings.artifact_root,
        metrics_port=settings.job_metrics_port,
        taxonomy=GitCheckout(
            url=git.url, commit=revision, credentials_dir=GIT_CREDENTIALS_DIR if git.secret_ref else None
        ),
        base=taxonomy.spec.base,
        leaves=spec.leaves,
        include=taxonomy.spec.include,
        exclude=taxonomy.spec.exclude,
        teacher=teacher_config,
        pipeline=pipeline,
        scale=spec.scale,
        mixing=spec.mixing,
        evaluation=HoldOutSpec.model_validate(spec.evaluation.model_dump(exclude={"multiple_choice"})),
        multiple_choice=multiple_choice,
        output=output,
        leaf_failure_policy=spec.leaf_failure_policy,
        cache=leaf_cache(spec.cache, output, settings),
        shards=spec.parallelism,
    )


def leaf_cache(spec: CacheSpec, output: str, settings: OperatorSettings) -> LeafCacheConfig | None:
    """The leaf cache on the output's claim, shared by every run writing there."""
    claims = artifact_claims([output])
    if spec.policy == "Disabled" or not claims:
        return None
    return LeafCacheConfig(
        uri=f"pvc://{claims[0]}/{LEAF_CACHE_FOLDER}",
        reuse=spec.policy == "Reuse",
        max_bytes=settings.leaf_cache_max_bytes,
    )


def _git_files(taxonomy: Taxonomy) -> list[FileMount]:
    git = taxonomy.spec.source.git
    return [FileMount("secret", git.secret_ref.name, GIT_CREDENTIALS_DIR)] if git.secret_ref else []


def _teacher_files_and_env(run: SyntheticDataRun) -> tuple[list[FileMount], list[dict[str, Any]]]:
    """What the pods that ask the teacher mount (its CA, the pipelines) and its API key."""
    spec, files, env = run.spec, [], []
    endpoint = spec.teacher.endpoint
    if endpoint and endpoint.api_key_secret_ref:
        ref = endpoint.api_key_secret_ref
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    if endpoint and endpoint.ca_secret_ref:
        ref = endpoint.ca_secret_ref
        files.append(FileMount("secret", ref.name, TEACHER_CA_DIR, ((ref.key, "ca.crt"),)))
    return files, env


def _pipeline_files(run: SyntheticDataRun) -> list[FileMount]:
    spec, files = run.spec, []
    if spec.pipeline.config_map_ref:
        pipeline = spec.pipeline.config_map_ref
        files.append(FileMount("configMap", pipeline.name, PIPELINE_DIR, ((pipeline.key, "pipeline.yaml"),)))
    choices = spec.evaluation.multiple_choice
    if choices and choices.pipeline.config_map_ref:
        choice_map = choices.pipeline.config_map_ref
        mount = ((choice_map.key, "pipeline.yaml"),)
        files.append(FileMount("configMap", choice_map.name, CHOICE_PIPELINE_DIR, mount))
    return files


def _output_uris(run: SyntheticDataRun, output: str) -> list[str]:
    return [output, *(r.uri for r in run.spec.mixing.replay)]


def generator_job_name(body: Mapping[str, Any], parallelism: int) -> str:
    # The pods of an Indexed Job are named (host names) <job>-<index>: a DNS label.
    owner = body["metadata"]["name"]
    return dns_label_name(owner, "generate") if parallelism > 1 else child_name(owner, "generate")


def build_generator_children(
    body: Mapping[str, Any],
    run: SyntheticDataRun,
    taxonomy: Taxonomy,
    config: GenerateConfig,
    settings: OperatorSettings,
) -> tuple[dict[str, Any], ...]:
    """ConfigMap and Job of the generator pods: one pod, or one per shard (an Indexed Job whose
    failing index is retried alone)."""
    spec = run.spec
    name = generator_job_name(body, spec.parallelism)
    teacher_files, env = _teacher_files_and_env(run)
    sidecars = (build_vllm_sidecar(spec.teacher.model, settings),) if spec.teacher.model else ()
    shard = ("--shard", "$(JOB_COMPLETION_INDEX)") if spec.parallelism > 1 else ()
    request = PodRequest(
        component=COMPONENT,
        image=settings.generator_image,
        args=("generate", "--config", CONFIG_PATH, *shard),
        config_map=name,
        scheduling=spec.scheduling,
        artifact_uris=(
            *_output_uris(run, config.output),
            *((spec.teacher.model.uri,) if spec.teacher.model else ()),
        ),
        env=tuple(env),
        files=(*_git_files(taxonomy), *teacher_files, *_pipeline_files(run)),
        sidecars=sidecars,
    )
    meta = child_metadata(body, name, COMPONENT)
    template = build_pod_template(child_labels(body, COMPONENT), request, settings)
    job = build_job(meta, template, spec, completions=spec.parallelism, retries_per_index=True)
    return build_config_map(meta, config), job


def build_mix_job(
    body: Mapping[str, Any],
    run: SyntheticDataRun,
    taxonomy: Taxonomy,
    output: str,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The Job that mixes a sharded run's shards into the datasets, once they all finished: the
    generator's config, the taxonomy and the output, no teacher and no GPU."""
    spec = run.spec
    request = PodRequest(
        component=MIX_COMPONENT,
        image=settings.generator_image,
        args=("generate", "--config", CONFIG_PATH, "--mix"),
        config_map=generator_job_name(body, spec.parallelism),
        scheduling=spec.scheduling,
        artifact_uris=tuple(_output_uris(run, output)),
        files=(*_git_files(taxonomy), *_pipeline_files(run)),
    )
    meta = child_metadata(body, child_name(body["metadata"]["name"], "mix"), MIX_COMPONENT)
    template = build_pod_template(child_labels(body, MIX_COMPONENT), request, settings)
    return build_job(meta, template, spec)
