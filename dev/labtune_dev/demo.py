"""The local demo's environment on a running cluster with a real node: an https git server with the
demo taxonomy, a SmolLM2 teacher behind llama.cpp's OpenAI-compatible server, the artifact claim with the
base model on it, the project's three images built here and loaded into the node, and the operator
installed with its Helm chart. `demo_environment` runs it in-process (the end-to-end test);
`labtune-dev demo up|down` runs it detached for `make demo`.

The git server and the teacher listen on the node's address, which is where pods reach the host."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from labtune_dev.binaries import progress
from labtune_dev.gitserver import GitServer, git_server
from labtune_dev.images import IMAGES, build_image
from labtune_dev.llama import llama_server
from labtune_dev.models import smollm2_gguf
from labtune_dev.node import load_image
from labtune_dev.processes import run_step
from labtune_dev.tools import HELM, ensure_commands

CLAIM = "labtune-artifacts"
BASE_MODEL_PATH = "models/smollm2-135m-instruct"
GIT_SECRET = "demo-git"
PIPELINE_CONFIG_MAP = "demo-pipeline"
TEACHER_MODEL = "smollm2"
CHART = Path(__file__).resolve().parents[2] / "charts" / "labtune"
JOB_UID = 65532  # the UID of labtune's images and job pods (operator/children/pod_template.py)
_GIT = ["git", "-c", "user.name=labtune demo", "-c", "user.email=demo@labtune.invalid"]


class DemoSettings(BaseModel):
    kubeconfig: Path
    node_dir: Path
    """The node's folder (its containerd socket): the images are loaded there."""
    node_address: str
    """Where pods reach the host: the git server and the teacher listen there."""
    state_dir: Path
    examples: Path
    """examples/demo: the taxonomy and document sources."""
    namespace: str = "default"
    git_port: int = 8443
    teacher_port: int = 8000
    release: str = "labtune"
    operator_namespace: str = "labtune-system"


class DemoState(BaseModel):
    """What the demo published once everything is up."""

    pid: int
    git_url: str
    teacher_url: str
    taxonomy_commit: str
    claim_dir: Path
    logs: dict[str, Path]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run([*_GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _publish_repo(source: Path, work: Path, served: Path, name: str) -> str:
    """Commits `source` as a new repository on branch main, serves a bare copy; returns the commit."""
    repo = work / name
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(source, repo)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", f"labtune demo: {name}")
    bare = served / f"{name}.git"
    shutil.rmtree(bare, ignore_errors=True)
    _git(work, "clone", "--quiet", "--bare", str(repo), str(bare))
    _git(bare, "config", "uploadpack.allowFilter", "true")  # the sync pod's shallow, filtered clone
    return _git(repo, "rev-parse", "HEAD")


def make_repositories(examples: Path, work: Path, served: Path, base_url: str) -> str:
    """The documents repository, then the taxonomy pointing at it; returns the taxonomy's commit."""
    served.mkdir(parents=True, exist_ok=True)
    documents_commit = _publish_repo(examples / "documents", work, served, "documents")
    taxonomy = work / "taxonomy-source"
    shutil.rmtree(taxonomy, ignore_errors=True)
    shutil.copytree(examples / "taxonomy", taxonomy)
    for leaf in taxonomy.rglob("qna.yaml"):
        text = leaf.read_text().replace("DOCUMENT_REPO", f"{base_url}/documents.git")
        leaf.write_text(text.replace("DOCUMENT_COMMIT", documents_commit))
    return _publish_repo(taxonomy, work, served, "taxonomy")


def place_base_model(claim_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder on the artifact claim (converted once)."""
    from labtune.trainer.gguf_cache import hf_folder  # torch and transformers: only when needed

    target = claim_dir / BASE_MODEL_PATH
    if not (target / "config.json").is_file():
        shutil.copytree(hf_folder(smollm2_gguf()), target, dirs_exist_ok=True)
    return target


def make_claim_dir(claim_dir: Path) -> None:
    """The claim's folder, owned by the UID job pods run as (a hostPath volume gets no fsGroup)."""
    claim_dir.mkdir(parents=True, exist_ok=True)
    for path in (claim_dir, *claim_dir.rglob("*")):
        os.chown(path, JOB_UID, JOB_UID)


def _create(create: Callable[..., Any], *args: Any) -> None:
    """Creates an object unless it exists (re-running the demo)."""
    try:
        create(*args)
    except ApiException as error:
        if error.status != 409:
            raise


def apply_cluster_objects(api: client.ApiClient, namespace: str, claim_dir: Path, git: GitServer) -> None:
    """The artifact claim (bound to a hostPath volume), the git credentials, the small-teacher pipeline."""
    from labtune.generator.pipeline import packaged_path

    core = client.CoreV1Api(api)
    volume = f"{namespace}-{CLAIM}"
    _create(
        core.create_persistent_volume,
        {
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "20Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(claim_dir), "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        },
    )
    claim = {
        "metadata": {"name": CLAIM},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "manual",
            "volumeName": volume,
            "resources": {"requests": {"storage": "20Gi"}},
        },
    }
    _create(core.create_namespaced_persistent_volume_claim, namespace, claim)
    secret = {
        "metadata": {"name": GIT_SECRET},
        "type": "kubernetes.io/basic-auth",
        # ca.crt: the private CA of the git server, as Flux's GitRepository Secrets carry it.
        "stringData": {"username": git.username, "password": git.password, "ca.crt": git.ca.read_text()},
    }
    _create(core.create_namespaced_secret, namespace, secret)
    pipeline = {
        "metadata": {"name": PIPELINE_CONFIG_MAP},
        "data": {"pipeline.yaml": packaged_path("small-teacher").read_text()},
    }
    _create(core.create_namespaced_config_map, namespace, pipeline)


def load_images(node_dir: Path) -> dict[str, str]:
    """Builds the three images (cached layers) and loads them into the node; returns name → tag."""
    tags: dict[str, str] = {}
    for name in IMAGES:
        built = build_image(name)
        load_image(node_dir, built.oci)
        tags[name] = built.tag
    return tags


@contextmanager
def helm_release(settings: DemoSettings, helm: str, tags: dict[str, str], log: Path) -> Iterator[None]:
    """`helm install` of the chart with the images built here, until the block ends (`helm uninstall`)."""
    env = {**os.environ, "KUBECONFIG": str(settings.kubeconfig)}

    def repository(name: str) -> str:
        return tags[name].rsplit(":", 1)[0]

    values = [
        f"image.repository={repository('operator')}",
        f"image.tag={tags['operator'].rsplit(':', 1)[1]}",
        f"jobImages.generator={repository('generator')}",
        f"jobImages.trainer={repository('trainer')}",
        f"jobImages.tag={tags['trainer'].rsplit(':', 1)[1]}",
        f"watchNamespaces[0]={settings.namespace}",
        # One replica on the one-node dev cluster: a standby's CPU request would compete with job pods.
        "replicaCount=1",
        # Short intervals: the demo's steps take seconds, not hours.
        "extraArgs[0]=--scrape-interval=5",
        "extraArgs[1]=--resync-interval=10",
    ]
    base = [helm, "--namespace", settings.operator_namespace]
    command = [
        *base,
        "install",
        settings.release,
        str(CHART),
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
    ]
    for value in values:
        command += ["--set", value]
    run_step("helm install of the operator's chart", command, log, RuntimeError, env)
    try:
        yield
    finally:
        subprocess.run(
            [*base, "uninstall", settings.release, "--wait"], env=env, capture_output=True, check=False
        )


@contextmanager
def demo_environment(settings: DemoSettings) -> Iterator[DemoState]:
    """Starts everything the demo's resources need; stops it all when the block ends."""
    state_dir = settings.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = {name: state_dir / f"{name}.log" for name in ("helm", "teacher")}
    host = settings.node_address
    api: client.ApiClient = config.new_client_from_config(config_file=str(settings.kubeconfig))  # type: ignore[no-untyped-call]
    with ExitStack() as stack, ThreadPoolExecutor(max_workers=1) as pool:
        stack.callback(api.close)
        # helm (minutes of CPU on a cold cache) builds while the steps below wait on disk and network.
        helm = pool.submit(ensure_commands, HELM)
        started = time.monotonic()
        served = state_dir / "git" / "served"
        git = stack.enter_context(
            git_server(served, state_dir / "git" / "tls", host=host, port=settings.git_port)
        )
        commit = make_repositories(settings.examples, state_dir / "git", served, git.url)
        progress(f"git server at {git.url} (taxonomy {commit[:12]}) in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        teacher = stack.enter_context(
            llama_server(
                smollm2_gguf(), logs["teacher"], alias=TEACHER_MODEL, host=host, port=settings.teacher_port
            )
        )
        progress(
            f"teacher (SmolLM2-135M-Instruct on llama.cpp) at {teacher} in {time.monotonic() - started:.1f}s"
        )
        claim_dir = state_dir / "claim"
        started = time.monotonic()
        place_base_model(claim_dir)
        make_claim_dir(claim_dir)
        apply_cluster_objects(api, settings.namespace, claim_dir, git)
        progress(f"base model on claim {CLAIM} in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        tags = load_images(settings.node_dir)
        progress(f"images {', '.join(tags.values())} in the node in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        stack.enter_context(helm_release(settings, str(helm.result() / "helm"), tags, logs["helm"]))
        progress(f"operator installed with helm, Ready in {time.monotonic() - started:.1f}s")
        yield DemoState(
            pid=os.getpid(),
            git_url=git.url,
            teacher_url=teacher,
            taxonomy_commit=commit,
            claim_dir=claim_dir,
            logs=logs,
        )


# --- detached (`labtune-dev demo up|down`) -----------------------------------------------------

_STATE_FILE = "state.json"


def serve(settings: DemoSettings) -> None:
    """Runs the environment until SIGTERM/SIGINT, publishing its state file once ready."""
    stop = {"now": False}

    def stopped(*_: object) -> None:
        stop["now"] = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stopped)
    state_file = settings.state_dir / _STATE_FILE
    with demo_environment(settings) as state:
        state_file.write_text(state.model_dump_json(indent=2))
        while not stop["now"]:
            time.sleep(0.5)
        state_file.unlink(missing_ok=True)


def running(state_dir: Path) -> DemoState | None:
    try:
        state = DemoState.model_validate_json((state_dir / _STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return None
    return state


def up(settings: DemoSettings, timeout: float = 900.0) -> DemoState:
    """Starts `serve` detached unless it runs; waits until it published its state."""
    if (state := running(settings.state_dir)) is not None:
        return state
    # A fresh start: outputs left on the claim by a previous demo would be resumed, not redone.
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    settings.state_dir.mkdir(parents=True)
    log = settings.state_dir / "demo.log"
    command = [
        sys.executable,
        "-m",
        "labtune_dev.dev_cli",
        "demo",
        "serve",
        "--settings",
        settings.model_dump_json(),
    ]
    with log.open("wb") as out:
        popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while (state := running(settings.state_dir)) is None:
        if popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the demo environment did not start; last lines of {log}:\n"
                               + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))  # fmt: skip
        time.sleep(0.5)
    return state


def down(state_dir: Path, timeout: float = 120.0) -> bool:
    """Stops the detached environment (its pods first); False when none ran."""
    state = running(state_dir)
    if state is None:
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(state.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    os.kill(state.pid, signal.SIGKILL)
    return True
