"""Builds (once) the control plane binaries from the published Go modules, or finds prebuilt ones.

kube-apiserver, kube-controller-manager, kube-scheduler, and the node's kubelet and kube-proxy come
from `k8s.io/kubernetes`, etcd
from `go.etcd.io/etcd/server/v3`; they land in a version-named cache folder outside the clone:

    $LABTUNE_CACHE/controlplane/kubernetes-<KUBE_VERSION>_etcd-<ETCD_VERSION>/

Environment: KUBE_VERSION (default v1.36.3), ETCD_VERSION (default v3.6.16), LABTUNE_CACHE
(default $XDG_CACHE_HOME/labtune or ~/.cache/labtune), and KUBEBUILDER_ASSETS (a folder of
prebuilt binaries, the envtest convention; nothing is built when it is set).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_KUBE_VERSION = "v1.36.3"
DEFAULT_ETCD_VERSION = "v3.6.16"
CONTROL_PLANE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The node's own: built from the same wrapper module, so one build serves the whole cluster.
NODE_COMMANDS = ("kubelet", "kube-proxy")
KUBE_COMMANDS = (*CONTROL_PLANE_COMMANDS, *NODE_COMMANDS)
BINARIES = (*KUBE_COMMANDS, "etcd")

_KUBE_VERSION_RE = re.compile(r"^v1\.(?P<minor>\d+)\.\d+(-[0-9A-Za-z.-]+)?$")
# A staging module required at the placeholder version, e.g. "\tk8s.io/api v0.0.0".
_STAGING_REQUIRE_RE = re.compile(r"^\s+(k8s\.io/[a-z0-9-]+) v0\.0\.0$", re.MULTILINE)
_TOOLS_GO = """//go:build tools

package tools

import (
{imports}
)
"""


class BinariesError(RuntimeError):
    """The control plane binaries are missing and cannot be built."""


@dataclass(frozen=True)
class Versions:
    """The Kubernetes and etcd module versions to build."""

    kube: str
    etcd: str

    @classmethod
    def from_env(cls) -> Versions:
        kube = os.environ.get("KUBE_VERSION") or DEFAULT_KUBE_VERSION
        if not _KUBE_VERSION_RE.match(kube):
            raise BinariesError(f"KUBE_VERSION={kube!r} is not a k8s.io/kubernetes version like v1.36.3")
        return cls(kube=kube, etcd=os.environ.get("ETCD_VERSION") or DEFAULT_ETCD_VERSION)

    @property
    def kube_minor(self) -> str:
        match = _KUBE_VERSION_RE.match(self.kube)
        assert match is not None  # checked in from_env
        return match["minor"]

    @property
    def staging(self) -> str:
        """The version of the staging modules (k8s.io/api, ...) published with this release."""
        return "v0." + self.kube.removeprefix("v1.")


def progress(message: str) -> None:
    """Prints a progress line to stderr (builds and start-ups take long enough to narrate)."""
    print(f"labtune devcluster: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """The labtune cache folder, shared with hack/venv.sh."""
    if cache := os.environ.get("LABTUNE_CACHE"):
        return Path(cache).absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).absolute() if xdg else Path.home() / ".cache") / "labtune"


def binaries_dir(versions: Versions) -> Path:
    return cache_root() / "controlplane" / f"kubernetes-{versions.kube}_etcd-{versions.etcd}"


def missing_binaries(folder: Path, names: tuple[str, ...] = BINARIES) -> list[str]:
    return [name for name in names if not os.access(folder / name, os.X_OK)]


def ensure_binaries() -> Path:
    """Returns a folder holding all four binaries, building what is missing (minutes, once)."""
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        return _prebuilt(Path(assets))
    versions = Versions.from_env()
    out = binaries_dir(versions)
    if not missing_binaries(out):
        return out
    with _build_lock(out):
        # Another process may have finished the build while this one waited for the lock.
        if missing := missing_binaries(out):
            _build(out, versions, missing)
    return out


def _prebuilt(folder: Path) -> Path:
    if not folder.is_dir():
        raise BinariesError(f"KUBEBUILDER_ASSETS={folder} is not a folder; unset it to build the binaries")
    # envtest's assets have no kubelet: only a node needs one (labtune_dev.node_binaries says so).
    if missing := missing_binaries(folder, (*CONTROL_PLANE_COMMANDS, "etcd")):
        raise BinariesError(
            f"KUBEBUILDER_ASSETS={folder} lacks executable {', '.join(missing)}; "
            "add them or unset KUBEBUILDER_ASSETS to build them"
        )
    return folder.resolve()


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Serialises builds of one version across processes (parallel test runs, CLI)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process building into {out}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(out: Path, versions: Versions, missing: list[str]) -> None:
    if shutil.which("go") is None:
        raise BinariesError(
            "'go' is not on PATH; install Go >= 1.26 or set KUBEBUILDER_ASSETS to a folder of "
            f"prebuilt {', '.join(BINARIES)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="labtune-cpbuild-") as work:
        if kube := [name for name in missing if name in KUBE_COMMANDS]:
            _build_kubernetes(Path(work) / "kube", out, versions, kube, env)
        if "etcd" in missing:
            _build_etcd(Path(work) / "etcd", out, versions, env)
    progress(f"built {', '.join(missing)} in {time.monotonic() - started:.0f}s into {out}")


def _build_kubernetes(
    work: Path, out: Path, versions: Versions, commands: list[str], env: dict[str, str]
) -> None:
    """Builds from a wrapper module: the published k8s.io/kubernetes go.mod cannot be used as is."""
    work.mkdir()
    _go(["mod", "init", "labtune.local/controlplane"], work, env)
    info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{versions.kube}"], work, env))
    (work / "go.mod").write_text(wrapper_go_mod(Path(info["GoMod"]).read_text(), versions))
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{name}"' for name in KUBE_COMMANDS)
    (work / "tools.go").write_text(_TOOLS_GO.format(imports=imports))
    # tidy only fills go.sum; it reports (harmless) errors for test-only deps, so they are ignored.
    subprocess.run(["go", "mod", "tidy", "-e"], cwd=work, env=env, capture_output=True, check=False)
    _go(["mod", "download"], work, env)
    for name in commands:
        progress(f"building {name} {versions.kube} (minutes with a cold Go build cache)")
        ldflags = version_ldflags(versions)
        _go_build(
            work, out / name, f"k8s.io/kubernetes/cmd/{name}", ["-tags", "tools", "-ldflags", ldflags], env
        )


def _build_etcd(work: Path, out: Path, versions: Versions, env: dict[str, str]) -> None:
    progress(f"building etcd {versions.etcd}")
    work.mkdir()
    _go(["mod", "init", "labtune.local/etcd"], work, env)
    _go(["get", f"go.etcd.io/etcd/server/v3@{versions.etcd}"], work, env)
    _go_build(work, out / "etcd", "go.etcd.io/etcd/server/v3", ["-ldflags", "-s -w"], env)


def wrapper_go_mod(kube_go_mod: str, versions: Versions) -> str:
    """A go.mod requiring k8s.io/kubernetes with its v0.0.0 staging modules pinned to the release.

    The published go.mod requires k8s.io/api etc. at v0.0.0 (resolved by `replace ./staging/...`
    in the kubernetes repository), which cannot be resolved from outside it.
    """
    go_line = next((line for line in kube_go_mod.splitlines() if line.startswith("go ")), None)
    if go_line is None:
        raise BinariesError(f"k8s.io/kubernetes@{versions.kube} go.mod has no 'go' directive")
    replaces = [
        f"\t{module} => {module} {versions.staging}" for module in _STAGING_REQUIRE_RE.findall(kube_go_mod)
    ]
    return "\n".join(
        [
            "module labtune.local/controlplane",
            "",
            go_line,
            "",
            f"require k8s.io/kubernetes {versions.kube}",
            "",
            "replace (",
            *replaces,
            ")",
            "",
        ]
    )


def version_ldflags(versions: Versions) -> str:
    """Linker flags stamping the version that `kubectl version` and /version report."""
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for name, value in (
            ("gitVersion", versions.kube),
            ("gitMajor", "1"),
            ("gitMinor", versions.kube_minor),
            ("gitTreeState", "clean"),
        ):
            flags += ["-X", f"{package}.{name}={value}"]
    return " ".join(flags)


def _go_build(work: Path, target: Path, package: str, flags: list[str], env: dict[str, str]) -> None:
    partial = target.with_name(target.name + ".tmp")
    _go(["build", "-trimpath", *flags, "-o", str(partial), package], work, env)
    partial.replace(target)  # atomic: a binary is either absent or complete


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-30:])
        raise BinariesError(f"`go {' '.join(args)}` failed (exit {result.returncode}) in {cwd}:\n{tail}")
    return result.stdout


def ensure_debian_packages(wanted: dict[str, Path], needed_by: str) -> None:
    """Installs the Debian packages (name → a file it installs) whose files are missing (root; CI
    machines start without them). One install at a time: apt-get fails at once on another's lock."""
    if not (missing := _missing_packages(wanted)):
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BinariesError(
            f"{needed_by} needs the Debian packages {' '.join(missing)}; install them as root"
        )
    with _build_lock(cache_root() / "apt-get"):
        if missing := _missing_packages(wanted):
            _apt_get_install(missing)


def _missing_packages(wanted: dict[str, Path]) -> list[str]:
    return sorted(name for name, path in wanted.items() if not path.exists())


def _apt_get_install(packages: list[str]) -> None:
    progress(f"installing Debian packages {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            raise BinariesError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n{tail}")
