"""Kueue (`sigs.k8s.io/kueue`) on the local control plane: its controller manager, built once from the
published Go module, and its CRDs, taken from the same module.

    $LABTUNE_CACHE/gotools/kueue-<KUEUE_VERSION>/kueue        the controller manager (cmd/kueue)
    $LABTUNE_CACHE/gotools/kueue-<KUEUE_VERSION>/crds/*.yaml  config/components/crd/bases

`kueue_controller` runs the manager as a child process against a kubeconfig: the CRDs installed, no
leader election, only the batch/v1 Job integration, no internal cert management. Kueue's webhooks
are served (its readiness check waits for the webhook server) but not registered with the API server:
this control plane has no Service routing to reach them, and the reconcilers are what matters here.
Without its defaulting webhook Kueue does not suspend a Job on creation; create queued Jobs with
`spec.suspend: true` (what the webhook would have set). The CRDs go in as the module's bases, without
the kustomize patches that route conversion to the webhook: v1beta1 is still served, but converted
only by rewriting apiVersion, so use v1beta2 (the storage version) throughout.

One change to Kueue's main package: v0.17 reads the metrics server's certificate from a fixed
`/etc/kueue/metrics/certs` whenever internal cert management is off (main.go, no flag or setting), which
only root could provide. The build takes cmd/kueue/main.go from the module and lets the
`LABTUNE_KUEUE_METRICS_CERT_DIR` environment variable name that folder instead; the rest is the
module's code at the version.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from labtune_dev import certs
from labtune_dev.binaries import BinariesError, _build_lock, _go, progress
from labtune_dev.processes import free_port, launch, log_tail, probe, terminate, wait_healthy
from labtune_dev.tools import GoCommands, _install, _missing, _require_go

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

KUEUE_MODULE, KUEUE_VERSION = "sigs.k8s.io/kueue", "v0.17.0"
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_API_VERSION = "v1beta2"  # the CRDs' storage version in v0.17 (v1beta1 is still served)
CONFIG_API_VERSION = "config.kueue.x-k8s.io/v1beta2"
NAMESPACE = "kueue-system"  # Kueue's own namespace (the Configuration's default)
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
METRICS_CERT_DIR_ENV = "LABTUNE_KUEUE_METRICS_CERT_DIR"
CRD_SOURCE = "config/components/crd/bases"
# Off: VisibilityOnDemand starts an aggregated API server on 0.0.0.0:8082; MultiKueue watches
# kueue-system for worker clusters. Neither is needed on one local cluster.
FEATURE_GATES = {"VisibilityOnDemand": False, "MultiKueue": False}
_CRD_API = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")

_METRICS_CERT_LINE = 'metricsCertPath := "/etc/kueue/metrics/certs"'
_METRICS_CERT_PATCH = (
    _METRICS_CERT_LINE + "\n"
    f'\t\tif dir := os.Getenv("{METRICS_CERT_DIR_ENV}"); dir != "" {{ // labtune: not only /etc\n'
    "\t\t\tmetricsCertPath = dir\n"
    "\t\t}"
)

KUEUE = GoCommands(
    "kueue",
    KUEUE_MODULE,
    KUEUE_VERSION,
    ("cmd/kueue",),
    (f"{KUEUE_MODULE}/pkg/version.GitVersion={KUEUE_VERSION}",),  # as the Makefile's LD_FLAGS
)


class KueueError(RuntimeError):
    """Kueue could not be built, installed or started."""


@dataclass(frozen=True)
class KueueBinaries:
    manager: Path  # the controller manager (cmd/kueue)
    crds: Path  # a folder of the module's CRD YAML files


@dataclass(frozen=True)
class KueueController:
    """A running Kueue controller manager."""

    pid: int
    log: Path
    config: Path
    health_url: str  # plain HTTP: /healthz, /readyz
    metrics_url: str  # HTTPS, self-signed cert, bearer token with access to /metrics
    webhook_port: int


def ensure_kueue() -> KueueBinaries:
    """The manager binary and the CRDs, built and copied unless they are there (minutes, once)."""
    out = KUEUE.folder()
    crds = out / "crds"
    if _missing(out, KUEUE.commands) or not _has_crds(crds):
        with _build_lock(out):
            # Another process may have finished the build while this one waited for the lock.
            if _missing(out, KUEUE.commands):
                module = _module_dir()
                _install(replace(KUEUE, main=_patched_main(module)), out)  # replaces `out` whole
            if not _has_crds(crds):
                _copy_crds(_module_dir(), crds)
    return KueueBinaries(manager=out / "kueue", crds=crds)


def _has_crds(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.yaml"))


def _module_dir() -> Path:
    """The module's extracted zip in the Go module cache (read-only)."""
    _require_go()
    with tempfile.TemporaryDirectory(prefix="labtune-kueue-") as work:
        output = _go(
            ["mod", "download", "-json", f"{KUEUE_MODULE}@{KUEUE_VERSION}"], Path(work), dict(os.environ)
        )
    return Path(json.loads(output)["Dir"])


def _patched_main(module: Path) -> str:
    source = (module / "cmd" / "kueue" / "main.go").read_text()
    if source.count(_METRICS_CERT_LINE) != 1:
        raise BinariesError(
            f"{KUEUE_MODULE}@{KUEUE_VERSION} cmd/kueue/main.go has no single `{_METRICS_CERT_LINE}`; "
            "update labtune_dev.kueue's patch for this version"
        )
    return source.replace(_METRICS_CERT_LINE, _METRICS_CERT_PATCH)


def _copy_crds(module: Path, out: Path) -> None:
    progress(f"copying the Kueue {KUEUE_VERSION} CRDs")
    sources = sorted((module / CRD_SOURCE).glob("*.yaml"))
    if not sources:
        raise BinariesError(f"{KUEUE_MODULE}@{KUEUE_VERSION} has no {CRD_SOURCE}/*.yaml")
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for source in sources:
        shutil.copyfile(source, staging / source.name)  # the module cache is read-only
    shutil.rmtree(out, ignore_errors=True)
    staging.replace(out)


@contextlib.contextmanager
def kueue_controller(
    kubeconfig: Path, workdir: Path, *, startup_timeout: float = 120.0
) -> Iterator[KueueController]:
    """Installs Kueue's CRDs and namespace, runs the controller manager until the block ends.

    The manager logs to `workdir/kueue.log`; its configuration and certificates are written to
    `workdir`. The CRDs and the namespace stay behind (deleting the CRDs would delete every queue
    and workload); a later call updates them.
    """
    binaries = ensure_kueue()
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    install_crds(kubeconfig, binaries.crds)
    _ensure_namespace(kubeconfig, NAMESPACE)
    cert_dir = workdir / "certs"
    _self_signed_cert(cert_dir)
    health, metrics, webhook = free_port(), free_port(), free_port()
    config = workdir / "kueue-config.yaml"
    config.write_text(yaml.safe_dump(configuration(health, metrics, webhook, cert_dir), sort_keys=False))
    log = workdir / "kueue.log"
    process = launch(
        "kueue",
        [
            str(binaries.manager),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            "--zap-log-level=2",  # the reconcilers' decisions ("Job admitted, unsuspending", ...)
        ],
        log,
        workdir,
        {**os.environ, METRICS_CERT_DIR_ENV: str(cert_dir)},
    )
    health_url = f"http://127.0.0.1:{health}"
    try:
        wait_healthy(
            process, lambda: probe(f"{health_url}/readyz", None), startup_timeout, KueueError, "/readyz: "
        )
        progress(
            f"kueue {KUEUE_VERSION} installed and ready in {time.monotonic() - started:.1f}s (log: {log})"
        )
        yield KueueController(
            pid=process.popen.pid,
            log=log,
            config=config,
            health_url=health_url,
            metrics_url=f"https://127.0.0.1:{metrics}/metrics",
            webhook_port=webhook,
        )
        if (code := process.popen.poll()) is not None:
            raise KueueError(f"kueue exited with code {code} while in use{log_tail(log)}")
    finally:
        terminate(process.popen)


def configuration(health_port: int, metrics_port: int, webhook_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for one local manager."""
    return {
        "apiVersion": CONFIG_API_VERSION,
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "manageJobsWithoutQueueName": False,
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "integrations": {"frameworks": ["batch/job"]},
        "featureGates": FEATURE_GATES,
    }


def _self_signed_cert(directory: Path) -> certs.CertKey:
    """tls.crt and tls.key (the names controller-runtime reads) for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = certs._name("labtune-kueue")
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        certs._builder(name, name, key)
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(certs._key_usage(cert_sign=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certs._write(directory, "tls", cert, key)


def install_crds(kubeconfig: Path, folder: Path, timeout: float = 60.0) -> list[str]:
    """Creates (or replaces) every CRD in `folder` and waits until each is Established."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    names: list[str] = []
    with _kube_client(kubeconfig) as api:
        # CRDs as plain dicts: the workloads CRD is 1.4 MB of schema, slow to turn into client models.
        custom = client.CustomObjectsApi(api)

        def get(name: str) -> dict[str, Any]:
            return cast("dict[str, Any]", custom.get_cluster_custom_object(*_CRD_API, name))

        for path in sorted(folder.glob("*.yaml")):
            body = yaml.safe_load(path.read_text())
            name = body["metadata"]["name"]
            try:
                custom.create_cluster_custom_object(*_CRD_API, body)
            except ApiException as error:
                if error.status != 409:
                    raise KueueError(f"creating CRD {name} ({path}): {error.status} {error.body}") from None
                body["metadata"]["resourceVersion"] = get(name)["metadata"]["resourceVersion"]
                custom.replace_cluster_custom_object(*_CRD_API, name, body)
            names.append(name)
        deadline = time.monotonic() + timeout
        for name in names:
            while not _established(get(name)):
                if time.monotonic() > deadline:
                    raise KueueError(f"CRD {name} was not Established within {timeout:.0f}s")
                time.sleep(0.2)
    return names


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _ensure_namespace(kubeconfig: Path, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with _kube_client(kubeconfig) as api:
        try:
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
            )
        except ApiException as error:
            if error.status != 409:
                raise KueueError(f"creating namespace {name}: {error.status} {error.body}") from None


@contextlib.contextmanager
def _kube_client(kubeconfig: Path) -> Iterator[ApiClient]:
    from kubernetes import config  # a slow import: only where a cluster is used

    api: ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]
