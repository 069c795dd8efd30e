"""The one place the operator meets kopf: its settings (watch timeouts, worker threads, no diff
base, no Events of its own), the watch-event handlers — each only updates the store and queues work
for the work queue's threads — and the start of the machinery (work queue, resync thread, Event
recorder, metrics and liveness endpoints).

Handlers are watch-event handlers, not kopf's create/update/resume: reconciliation is
level-triggered and needs no diff, so kopf writes no progress or last-handled-configuration
annotations (one patch and one more watch event per resource saved). They are async because they
only touch memory; the reconciliations run on the work queue's threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable
from functools import partial
from typing import Any, cast

import kopf

from labtune.api import API_VERSION, GROUP, VERSION, LabPipeline, SyntheticDataRun, Taxonomy
from labtune.api.resource import Resource
from labtune.operator import operator_metrics as metrics
from labtune.operator.children.child_names import MANAGED_BY, kind_label
from labtune.operator.lab_pipeline.lab_pipeline_reconcile import queue_pipeline, resync_pipelines
from labtune.operator.machinery import resync
from labtune.operator.machinery.api_client import Kube, api_client
from labtune.operator.machinery.context import Context, context_of
from labtune.operator.machinery.event_recorder import Recorder
from labtune.operator.machinery.leader_election import run_elected
from labtune.operator.machinery.resync import Periodic
from labtune.operator.machinery.work_queue import WorkQueue
from labtune.operator.runs.run_reconcile import RunKind
from labtune.operator.runs.run_worker import (
    RunKinds,
    on_run_event,
    resync_runs,
    run_each,
    scrape_running,
)
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run.synthetic_data_run_reconcile import SyntheticDataRunKind
from labtune.operator.taxonomy.taxonomy_reconcile import (
    queue_sync,
    resync_taxonomies,
    tick_taxonomies,
)
from labtune.operator.tuning_job.tuning_job_reconcile import TuningJobKind

FINALIZER = f"{GROUP}/finalizer"
# kopf's default is no timeout: a watch connection that silently dies is never noticed. The server
# ends each watch within this window and kopf reconnects.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
LIST_PAGE = 100
OBJECT_WORKER_IDLE_S = 0.5


RUN_KINDS: RunKinds = {"SyntheticDataRun": SyntheticDataRunKind(), "TuningJob": TuningJobKind()}
WAITS_FOR: dict[str, type[Resource]] = {"SyntheticDataRun": Taxonomy, "TuningJob": SyntheticDataRun}
"""What each run kind waits for: a change of it releases (or stalls) the runs waiting on it."""
TAXONOMY_TICK_S = 15.0
"""How often Taxonomies are looked at for a sync due by their interval (the CRD's minimum is 30s)."""


def periodic_tasks(settings: OperatorSettings) -> tuple[Periodic, ...]:
    def resync_all(context: Context) -> None:
        resync_runs(context, RUN_KINDS)
        resync_taxonomies(context)
        resync_pipelines(context)

    return (
        Periodic("resync", settings.resync_interval, resync_all),
        Periodic("taxonomy interval tick", TAXONOMY_TICK_S, tick_taxonomies),
        Periodic("progress scrape", settings.scrape_interval, partial(scrape_running, kinds=RUN_KINDS)),
    )


def _register_run(registry: kopf.OperatorRegistry, kind: RunKind) -> None:
    resource, kind_name = kind.resource, kind.resource.kind_name()
    waits_for = WAITS_FOR[kind_name]

    @kopf.on.event(GROUP, VERSION, resource.plural, id=f"{kind_name.lower()}_event", registry=registry)
    async def run_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        context = context_of(memo)
        on_run_event(context, kind, event)
        _stamped_run_moved(context, cast(dict[str, Any], event["object"]))

    @kopf.on.event(
        GROUP, VERSION, waits_for.plural, id=f"{waits_for.kind_name().lower()}_moved", registry=registry
    )
    async def dependency_moved(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        context = context_of(memo)
        run_each(context, kind, str(namespace), context.store.dependents(kind_name, str(namespace), name))


def _stamped_run_moved(context: Context, body: dict[str, Any]) -> None:
    """A run a LabPipeline stamped changed (or went): its pipeline looks again."""
    pipeline = (body["metadata"].get("annotations") or {}).get(kind_label("LabPipeline"))
    if pipeline:
        queue_pipeline(context, body["metadata"]["namespace"], pipeline)


def _register_pipeline(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.event(GROUP, VERSION, LabPipeline.plural, registry=registry)
    async def pipeline_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        context = context_of(memo)
        body = cast(dict[str, Any], event["object"])
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if event["type"] == "DELETED":
            context.forget(("LabPipeline", namespace, name))
            context.store.drop_owner("LabPipeline", namespace, name)
            metrics.RESOURCE_STATES.forget("LabPipeline", namespace, name)
            return
        context.store.put_owner(body)
        queue_pipeline(context, namespace, name)


def _register_taxonomy(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.event(GROUP, VERSION, Taxonomy.plural, registry=registry)
    async def taxonomy_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        context = context_of(memo)
        body = cast(dict[str, Any], event["object"])
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if event["type"] == "DELETED":
            context.forget(("Taxonomy", namespace, name))
            metrics.RESOURCE_STATES.forget("Taxonomy", namespace, name)
            return
        context.store.put_owner(body)
        queue_sync(context, namespace, name)
        for pipeline in context.store.dependents("LabPipeline", namespace, name):
            queue_pipeline(context, namespace, pipeline)


def _register_child_jobs(registry: kopf.OperatorRegistry) -> None:
    """Every change of a Job labtune made is kept in the store and reconciles its owner at once
    (instead of waiting for the resync)."""

    @kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: "labtune"}, registry=registry)
    async def child_job_moved(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        context = context_of(memo)
        job = cast(dict[str, Any], event["object"])
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        if event["type"] == "DELETED":
            context.store.drop_job(namespace, name)
        else:
            context.store.put_job(job)
        owners = job["metadata"].get("ownerReferences") or []
        owner = next((o for o in owners if o.get("apiVersion") == API_VERSION), None)
        if owner is None:
            return
        if owner["kind"] == "Taxonomy":
            queue_sync(context, namespace, owner["name"])
        elif owner["kind"] in RUN_KINDS:
            run_each(context, RUN_KINDS[owner["kind"]], namespace, (owner["name"],))


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    for kind in RUN_KINDS.values():
        _register_run(registry, kind)
    _register_taxonomy(registry)
    _register_pipeline(registry)
    _register_child_jobs(registry)
    return registry


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base, for handlers that need none. Every handler here is a watch-event handler,
    an index or a timer, and reconciles from what exists (level-triggered), so no
    last-handled-configuration is stored on the resources; and kopf's default would still deep-copy
    each body on every watch event to compute a diff nobody reads (the operator's main CPU cost
    under load)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    # kopf's own marks stay under labtune.io: the finalizer it puts on resources with a running
    # timer, and the progress of timers.
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    kopf_settings.persistence.diffbase_storage = NoDiffBase()
    kopf_settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    kopf_settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    kopf_settings.watching.connect_timeout = 30
    # A restart lists every resource and Job; pages keep that from being one huge response in memory.
    kopf_settings.watching.chunk_size = LIST_PAGE
    kopf_settings.execution.max_workers = settings.workers
    # kopf keeps a task per object alive this long after its last event; the handlers return at
    # once (they only queue work), so a short wait keeps a burst of listed objects from piling up.
    kopf_settings.queueing.idle_timeout = OBJECT_WORKER_IDLE_S
    kopf_settings.posting.enabled = False  # Events come from events.Recorder, for transitions only
    kopf_settings.networking.request_timeout = 60


def run(settings: OperatorSettings) -> None:
    """Runs the operator until it is stopped (SIGTERM/SIGINT)."""
    registry = build_registry()

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, operator_settings)
        kube = Kube(api_client(operator_settings.kubeconfig, operator_settings.workers))
        queue = WorkQueue(operator_settings.workers)
        memo.context = Context(kube, operator_settings, queue, recorder=Recorder(kube))
        resync.start(memo.context, periodic_tasks(operator_settings))

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if operator_settings.kubeconfig:
            return _login_from_kubeconfig(operator_settings.kubeconfig)
        return kopf.login_via_client(**kwargs)

    operator_settings = settings
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None

    def lead() -> None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=settings.workers))
        asyncio.set_event_loop(loop)
        loop.run_until_complete(
            kopf.operator(
                registry=registry,
                # No kopf peering: with several replicas, the Lease decides which one runs kopf.
                standalone=True,
                clusterwide=not settings.namespaces,
                namespaces=list(settings.namespaces),
                liveness_endpoint=liveness,
            )
        )

    metrics.serve(settings.metrics_port)  # a standby's too: it says it is one
    election_client = api_client(settings.kubeconfig, 1)
    run_elected(settings.leader_election, election_client, settings.liveness_port, lead)


def _login_from_kubeconfig(path: str) -> kopf.ConnectionInfo:
    """kopf's connection from an explicit kubeconfig file (tests, the local demo)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    load = config.load_kube_config
    load(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]
    api_key = configuration.api_key or {}
    token = (api_key.get("BearerToken") or api_key.get("authorization") or "").removeprefix(
        "Bearer "
    ).strip() or None
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        token=token,
        scheme="Bearer" if token else None,
        default_namespace="default",
    )
