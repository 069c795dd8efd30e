"""Builds (once) the chart and monitoring tools the tests use, from the published Go modules.

- `helm` from `helm.sh/helm/v3` (lint and render the chart),
- `prometheus` and `promtool` from `github.com/prometheus/prometheus` (check and unit-test the alert
  rules, scrape a running operator),
- the ServiceMonitor, PodMonitor and PrometheusRule CRDs from the module zip of
  `github.com/prometheus-operator/prometheus-operator` (so the chart's monitoring objects apply to a
  real API server).

Like the control-plane binaries they land in version-named folders outside the clone:

    $LABTUNE_CACHE/gotools/helm-<HELM_VERSION>/helm
    $LABTUNE_CACHE/gotools/prometheus-<PROMETHEUS_VERSION>/{prometheus,promtool}
    $LABTUNE_CACHE/gotools/prometheus-operator-<PROMETHEUS_OPERATOR_VERSION>/crds/*.yaml
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from labtune_dev.binaries import BinariesError, _build_lock, _go, cache_root, progress

HELM_MODULE, HELM_VERSION = "helm.sh/helm/v3", "v3.22.0"
PROMETHEUS_MODULE, PROMETHEUS_VERSION = "github.com/prometheus/prometheus", "v0.316.0"
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
# The CRDs of the monitoring objects the chart ships, as named in the module's example folder.
MONITORING_CRDS = tuple(
    f"monitoring.coreos.com_{plural}.yaml" for plural in ("servicemonitors", "podmonitors", "prometheusrules")
)


@dataclass(frozen=True)
class GoCommands:
    """Commands built with `go install <module>/<package>@<version>` into one folder."""

    name: str
    module: str
    version: str
    packages: tuple[str, ...]  # under the module ("" for its root); the command is the last path element
    stamps: tuple[str, ...] = ()  # `-X package.var=value` link-time settings, as the module's Makefile sets
    tags: tuple[str, ...] = ()  # build tags
    # The Go source of a main package that replaces the module's own (one package, ""): built in a
    # wrapper module that requires the module at the version, e.g. to link fewer plugins.
    main: str = ""

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(self._path(package).rsplit("/", 1)[-1] for package in self.packages)

    def _path(self, package: str) -> str:
        return f"{self.module}/{package}" if package else self.module

    @property
    def targets(self) -> list[str]:
        """`go install` arguments: every package at the version."""
        return [f"{self._path(package)}@{self.version}" for package in self.packages]

    def folder(self) -> Path:
        return cache_root() / "gotools" / f"{self.name}-{self.version}"


# helm's Makefile stamps its version and the Kubernetes version it assumes (from its k8s.io/client-go,
# v0.37 for helm v3.22); unstamped, `helm template` checks charts' kubeVersion against v1.20.
HELM = GoCommands(
    "helm",
    HELM_MODULE,
    HELM_VERSION,
    ("cmd/helm",),
    (
        f"{HELM_MODULE}/internal/version.version={HELM_VERSION}",
        f"{HELM_MODULE}/pkg/chartutil.k8sVersionMajor=1",
        f"{HELM_MODULE}/pkg/chartutil.k8sVersionMinor=37",
        f"{HELM_MODULE}/pkg/lint/rules.k8sVersionMajor=1",
        f"{HELM_MODULE}/pkg/lint/rules.k8sVersionMinor=37",
    ),
)
# remove_all_sd leaves out the cloud service discoveries (AWS, Azure, GCE, ...: most of the build time
# and size); the tests scrape static targets.
PROMETHEUS = GoCommands(
    "prometheus",
    PROMETHEUS_MODULE,
    PROMETHEUS_VERSION,
    ("cmd/prometheus", "cmd/promtool"),
    tags=("remove_all_sd",),
)


@dataclass(frozen=True)
class Tools:
    """Where the built tools are."""

    helm: Path
    prometheus: Path
    promtool: Path
    monitoring_crds: Path  # a folder of the prometheus-operator CRDs in MONITORING_CRDS


def ensure_tools() -> Tools:
    """Returns the tools, building or downloading what is missing (a few minutes, once)."""
    helm, prometheus = ensure_commands(HELM), ensure_commands(PROMETHEUS)
    return Tools(
        helm=helm / "helm",
        prometheus=prometheus / "prometheus",
        promtool=prometheus / "promtool",
        monitoring_crds=_ensure_monitoring_crds(),
    )


def ensure_commands(spec: GoCommands) -> Path:
    """The folder of the spec's commands, built with `go install` unless they are there."""
    out = spec.folder()
    if not _missing(out, spec.commands):
        return out
    with _build_lock(out):
        # Another process may have finished the build while this one waited for the lock.
        if _missing(out, spec.commands):
            _install(spec, out)
    return out


def _missing(folder: Path, names: tuple[str, ...]) -> bool:
    return any(not os.access(folder / name, os.X_OK) for name in names)


def _install(spec: GoCommands, out: Path) -> None:
    _require_go()
    started = time.monotonic()
    progress(f"building {', '.join(spec.commands)} {spec.version} (minutes with a cold Go build cache)")
    # `go install` into a scratch folder then a rename: the cache folder is either complete or absent.
    with tempfile.TemporaryDirectory(prefix=f"labtune-{spec.name}-", dir=out.parent) as work:
        staging = Path(work) / "bin"
        env = {**os.environ, "GOBIN": str(staging), "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}
        ldflags = " ".join(["-s", "-w", *(f"-X {stamp}" for stamp in spec.stamps)])
        tags = ["-tags", ",".join(spec.tags)] if spec.tags else []
        flags = ["-trimpath", *tags, "-ldflags", ldflags]
        if spec.main:
            _build_wrapper(spec, Path(work) / "main", staging, flags, env)
        else:
            _go(["install", *flags, *spec.targets], Path(work), env)
        shutil.rmtree(out, ignore_errors=True)
        staging.replace(out)
    progress(f"built {', '.join(spec.commands)} in {time.monotonic() - started:.0f}s into {out}")


def _build_wrapper(
    spec: GoCommands, work: Path, staging: Path, flags: list[str], env: dict[str, str]
) -> None:
    """`spec.main` as the main package of a module requiring spec.module at spec.version."""
    work.mkdir()
    _go(["mod", "init", f"labtune.local/{spec.name}"], work, env)
    (work / "main.go").write_text(spec.main)
    _go(["get", f"{spec.module}@{spec.version}"], work, env)
    _go(["mod", "tidy"], work, env)
    (command,) = spec.commands
    _go(["build", *flags, "-o", str(staging / command), "."], work, env)


def _ensure_monitoring_crds() -> Path:
    out = cache_root() / "gotools" / f"prometheus-operator-{PROMETHEUS_OPERATOR_VERSION}" / "crds"
    if all((out / name).is_file() for name in MONITORING_CRDS):
        return out
    with _build_lock(out):
        if not all((out / name).is_file() for name in MONITORING_CRDS):
            _download_monitoring_crds(out)
    return out


def _download_monitoring_crds(out: Path) -> None:
    _require_go()
    progress(f"downloading the prometheus-operator {PROMETHEUS_OPERATOR_VERSION} CRDs")
    target = f"{PROMETHEUS_OPERATOR_MODULE}@{PROMETHEUS_OPERATOR_VERSION}"
    with tempfile.TemporaryDirectory(prefix="labtune-promop-") as work:
        info = json.loads(_go(["mod", "download", "-json", target], Path(work), dict(os.environ)))
    source = Path(info["Dir"]) / "example" / "prometheus-operator-crd"
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in MONITORING_CRDS:
        shutil.copyfile(source / name, staging / name)  # the module cache is read-only
    shutil.rmtree(out, ignore_errors=True)
    staging.replace(out)


def _require_go() -> None:
    if shutil.which("go") is None:
        raise BinariesError("'go' is not on PATH; install Go >= 1.26 to build the dev cluster's tools")
