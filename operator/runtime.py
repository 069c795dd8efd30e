"""Starting the operator: kopf settings (own finalizer and storage under labtune.io, watch
timeouts, worker threads), the API client, the handlers, metrics and liveness endpoints."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable
from typing import Any

import kopf

from labtune.api import GROUP
from labtune.operator import metrics
from labtune.operator.context import Context
from labtune.operator.events import Recorder
from labtune.operator.handlers import jobs, resync, synthetic_data_run, taxonomy, tuning_job
from labtune.operator.kube import Kube, api_client
from labtune.operator.settings import OperatorSettings
from labtune.operator.workqueue import WorkQueue

FINALIZER = f"{GROUP}/finalizer"
# kopf's default is no timeout: a watch connection that silently dies is never noticed. The server
# ends each watch within this window and kopf reconnects.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
LIST_PAGE = 100
OBJECT_WORKER_IDLE_S = 0.5


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    for module in (taxonomy, synthetic_data_run, tuning_job, jobs):
        module.register(registry, settings)
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
    registry = build_registry(settings)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, operator_settings)
        kube = Kube(api_client(operator_settings.kubeconfig, operator_settings.workers))
        queue = WorkQueue(operator_settings.workers)
        memo.context = Context(kube, operator_settings, queue, recorder=Recorder(kube))
        resync.start(memo.context)
        metrics.serve(operator_settings.metrics_port)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if operator_settings.kubeconfig:
            return _login_from_kubeconfig(operator_settings.kubeconfig)
        return kopf.login_via_client(**kwargs)

    operator_settings = settings
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    loop = asyncio.new_event_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=settings.workers))
    asyncio.set_event_loop(loop)
    loop.run_until_complete(
        kopf.operator(
            registry=registry,
            standalone=True,  # no peering objects; run one replica (the chart's Deployment does)
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            liveness_endpoint=liveness,
        )
    )


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
