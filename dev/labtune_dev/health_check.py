"""What GitOps tools make of a labtune object's status, computed by their own code: `labtune-health`
(data/labtune_health.go), built once from the published Go modules, reads objects and prints

- kstatus: `status.Compute` of `sigs.k8s.io/cli-utils` (what `kubectl wait`-style tools, Flux's
  `wait: true` and cli-utils' appliers call Current, InProgress, Failed, ...),
- Argo CD: a health Lua script run by `github.com/yuin/gopher-lua`, the Lua 5.1 VM of Argo CD's
  util/lua, set up as Argo CD sets it up for a resource.customizations script (only the package,
  base, table and a safe os library; `obj` converted as Argo CD converts it; a 1 s deadline),
- Flux: a Kustomization's `healthCheckExprs` entry evaluated by `github.com/fluxcd/pkg/runtime/cel`
  `NewStatusEvaluator`, which kustomize-controller uses for them.

Like the chart's tools (labtune_dev.tools) it lands in a folder named by what it is built from:

    $LABTUNE_CACHE/gotools/labtune-health-<HEALTH_VERSION>/labtune-health
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labtune_dev.binaries import BinariesError, _build_lock, _go, cache_root, progress

COMMAND = "labtune-health"
# (module, version): every module the program imports, pinned (`go mod tidy` would otherwise add
# the newest of one the program imports but no pinned module requires).
MODULES = (
    ("sigs.k8s.io/cli-utils", "v0.37.2"),
    ("github.com/yuin/gopher-lua", "v1.1.1"),  # the version Argo CD v3 requires
    ("github.com/fluxcd/pkg/runtime", "v0.117.0"),
    ("github.com/fluxcd/pkg/apis/kustomize", "v1.21.0"),  # what that runtime requires
)


def _source() -> bytes:
    return resources.files("labtune_dev").joinpath("data/labtune_health.go").read_bytes()


def health_version() -> str:
    """The module versions and the program's source digest (a change of either builds anew)."""
    pinned = "_".join(f"{module.rsplit('/', 1)[-1]}-{version}" for module, version in MODULES)
    return f"{pinned}_{hashlib.sha256(_source()).hexdigest()[:12]}"


def tool_folder() -> Path:
    return cache_root() / "gotools" / f"{COMMAND}-{health_version()}"


def ensure_health_tool() -> Path:
    """The built program, building it unless it is there (a few minutes with a cold Go build cache)."""
    out = tool_folder()
    binary = out / COMMAND
    if os.access(binary, os.X_OK):
        return binary
    with _build_lock(out):
        # Another process may have finished the build while this one waited for the lock.
        if not os.access(binary, os.X_OK):
            _build(out)
    return binary


def _build(out: Path) -> None:
    if shutil.which("go") is None:
        raise BinariesError(f"'go' is not on PATH; install Go >= 1.26 to build {COMMAND}")
    started = time.monotonic()
    progress(f"building {COMMAND} ({health_version()}; minutes with a cold Go build cache)")
    # Built in a scratch folder then renamed: the cache folder is either complete or absent.
    with tempfile.TemporaryDirectory(prefix=f"labtune-{COMMAND}-", dir=out.parent) as work:
        module, staging = Path(work) / "main", Path(work) / "bin"
        module.mkdir()
        env = {**os.environ, "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}
        _go(["mod", "init", f"labtune.local/{COMMAND}"], module, env)
        (module / "main.go").write_bytes(_source())
        _go(["get", *(f"{name}@{version}" for name, version in MODULES)], module, env)
        _go(["mod", "tidy"], module, env)
        _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / COMMAND), "."], module, env)
        shutil.rmtree(out, ignore_errors=True)
        staging.replace(out)
    progress(f"built {COMMAND} in {time.monotonic() - started:.0f}s into {out}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Health(_Model):
    """One tool's verdict: its status word and message, or why it could not say (error)."""

    status: str = ""
    message: str = ""
    error: str = ""


class HealthCheckExprs(_Model):
    """One entry of a Flux Kustomization's `healthCheckExprs`: CEL for the objects of one kind."""

    api_version: str = Field(alias="apiVersion")
    kind: str
    current: str
    in_progress: str = Field("", alias="inProgress")
    failed: str = ""


class Verdicts(_Model):
    """What each tool makes of one object (argocd and flux: None when given no script or exprs)."""

    kstatus: Health
    argocd: Health | None = None
    flux: Health | None = None


def evaluate(
    objects: Sequence[Mapping[str, Any]],
    scripts: Mapping[str, str] | None = None,
    exprs: Sequence[HealthCheckExprs] = (),
) -> list[Verdicts]:
    """Each object's kstatus result, its Argo CD health by its kind's Lua script (`scripts` keyed by
    kind) and its Flux health by the healthCheckExprs entry of its apiVersion and kind (None for an
    object that has no script, or no entry)."""
    scripts = scripts or {}
    by_type = {(e.api_version, e.kind): e for e in exprs}
    lines = []
    for obj in objects:
        line: dict[str, Any] = {"object": obj, "lua": scripts.get(obj["kind"], "")}
        if (found := by_type.get((obj["apiVersion"], obj["kind"]))) is not None:
            line["cel"] = found.model_dump(
                by_alias=True, exclude_defaults=True, exclude={"api_version", "kind"}
            )
        lines.append(json.dumps(line) + "\n")
    result = subprocess.run(
        [str(ensure_health_tool())], input="".join(lines), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BinariesError(f"{COMMAND} failed (exit {result.returncode}): {result.stderr.strip()}")
    verdicts = [Verdicts.model_validate_json(line) for line in result.stdout.splitlines()]
    if len(verdicts) != len(objects):
        raise BinariesError(f"{COMMAND} answered {len(verdicts)} of {len(objects)} objects")
    return verdicts
