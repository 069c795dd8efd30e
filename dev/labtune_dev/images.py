"""Builds the operator, generator and trainer images with buildah, with no network inside the builds.

The images' Dockerfiles are the ones users build; here they get a local base (`--build-arg BASE`)
and the wheelhouse (`--volume`, with pip told by build args to use only it):

- the wheelhouse, $LABTUNE_CACHE/wheelhouse: every wheel images/requirements/*.txt pins, fetched on
  the host once (HTTPS from inside a build may fail certificate verification on this machine kind);
- the Debian bases, from `debootstrap --variant=minbase`: "python" (the operator's) and "git" (with
  git and ssh, so that the generator's Dockerfile runs no apt-get);
- the torch base: the git base with images/requirements/torch.txt installed into the system python,
  as the trainer's public PyTorch base has it; the generator and the trainer share it.

Bases are tagged by a digest of their inputs (LABTUNE_DEBIAN_MIRROR overrides the mirror), so a
second build finds them. Storage (overlay where it works, else vfs) lives in $LABTUNE_CACHE/images,
never in /var/lib/containers. A built image is read from that storage as an OCI image
(labtune_dev.buildah_storage), which the node imports as a stream (labtune_dev.oci), or `save` writes
as an OCI archive.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from labtune import __version__
from labtune_dev.binaries import _build_lock, cache_root, ensure_debian_packages, progress
from labtune_dev.buildah_storage import stored_image
from labtune_dev.image_requirements import LOCKS, LOCKS_BY_NAME, ROOT, normalize, pins
from labtune_dev.oci import OciError, OciImage
from labtune_dev.processes import run_step

ImageName = Literal["operator", "generator", "trainer"]
BaseKind = Literal["python", "git", "torch"]
IMAGE_NAMES: tuple[ImageName, ...] = get_args(ImageName)

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("LABTUNE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# passwd: the Dockerfiles' useradd (ssh and git want the UID in /etc/passwd).
DEBIAN_PACKAGES: dict[BaseKind, tuple[str, ...]] = {
    "python": ("passwd", "python3", "python3-venv"),
    "git": ("passwd", "python3", "python3-venv", "ca-certificates", "git", "openssh-client"),
}
# Part of every base's key: bump it when the steps below change, so that cached bases are rebuilt.
BASE_RECIPE = "1"
# What the rootfs needs not: apt's downloads and lists, docs, translations; the runtime provides /dev.
_TRIMMED = (
    *("var/cache/apt/archives", "var/lib/apt/lists", "dev"),
    *("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"),
)
_BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
# Into the system python's site-packages (where the PyTorch image's python has torch), with pip from a
# throwaway venv: Debian's python3 has no pip of its own. torch's console scripts are dropped: the
# trainer starts `python -m torch.distributed.run`.
_TORCH_INSTALL = """set -eu
site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
python3 -m venv /tmp/pip
/tmp/pip/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps --target "$site" \
  -r /tmp/torch.txt
rm -rf /tmp/pip "$site/bin"
"""


class ImageError(RuntimeError):
    """An image, a base or the wheelhouse cannot be built."""


@dataclass(frozen=True)
class ImageSpec:
    dockerfile: str  # relative to the repository root, the build context
    base: BaseKind


IMAGES: dict[ImageName, ImageSpec] = {
    "operator": ImageSpec("Dockerfile", "python"),
    "generator": ImageSpec("images/generator/Dockerfile", "torch"),
    "trainer": ImageSpec("images/trainer/Dockerfile", "torch"),
}


@dataclass(frozen=True)
class BuiltImage:
    name: ImageName
    tag: str  # what the chart and the operator default to
    image_id: str
    oci: OciImage  # named `tag`, read from buildah's storage

    @property
    def size(self) -> int:
        """Bytes: the sum of its uncompressed layers."""
        return self.oci.size


def image_tag(name: ImageName) -> str:
    return f"ghcr.io/labtune/{name}:{__version__}"


def images_dir() -> Path:
    return cache_root() / "images"


def wheelhouse_dir() -> Path:
    return cache_root() / "wheelhouse"


# --- cache keys (pure) ------------------------------------------------------------------------------


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def debian_base_key(suite: str, packages: tuple[str, ...], mirror: str) -> str:
    return _digest("debootstrap minbase", suite, *sorted(packages), mirror, BASE_RECIPE)


def torch_base_key(parent_key: str, torch_requirements: str) -> str:
    """Keyed by the pins alone: comments and annotations of torch.txt do not matter."""
    pinned = [f"{name}=={version}" for name, version in sorted(pins(torch_requirements).items())]
    return _digest("torch base", parent_key, *pinned, BASE_RECIPE)


def base_key(kind: BaseKind) -> str:
    if kind == "torch":
        return torch_base_key(base_key("git"), LOCKS_BY_NAME["torch"].path.read_text())
    return debian_base_key(DEBIAN_SUITE, DEBIAN_PACKAGES[kind], DEBIAN_MIRROR)


def base_tag(kind: BaseKind) -> str:
    return f"localhost/labtune-base-{kind}:{base_key(kind)[:16]}"


def wheel_pin(filename: str) -> tuple[str, str]:
    """(normalized name, version) of a wheel file name (PEP 427)."""
    name, version = filename.removesuffix(".whl").split("-")[:2]
    return normalize(name), version.lower()


Pin = tuple[str, str]
"""(normalized name, version)."""


def missing_wheels(wanted: set[Pin], filenames: list[str]) -> set[Pin]:
    """The pins of `wanted` that no wheel among `filenames` provides."""
    present = {wheel_pin(filename) for filename in filenames if filename.endswith(".whl")}
    return {(name, version) for name, version in wanted if (name, version.lower()) not in present}


# --- commands ---------------------------------------------------------------------------------------


def _run(step: str, argv: list[str], log: Path) -> str:
    return run_step(step, argv, log, ImageError)


def _log(name: str) -> Path:
    return images_dir() / "logs" / f"{name}.log"


def ensure_host_tools() -> None:
    """buildah and debootstrap, from Debian's packages when they are missing."""
    wanted = {"buildah": Path("/usr/bin/buildah"), "debootstrap": Path("/usr/sbin/debootstrap")}
    ensure_debian_packages(wanted, "building the images")


# containers/image (in buildah) run as root writes its blob-info cache to /var/lib/containers/cache,
# whatever --root says, and no flag moves it: buildah runs in a mount namespace of its own where
# /var/lib is read-only, and keeps that cache in memory.
_READ_ONLY_VAR_LIB = 'mount --bind /var/lib /var/lib && mount -o remount,bind,ro /var/lib && exec "$@"'


@dataclass(frozen=True)
class Buildah:
    """buildah on the storage under $LABTUNE_CACHE/images, with its temporary files there too."""

    driver: str

    @property
    def storage(self) -> Path:
        return images_dir() / f"storage-{self.driver}"

    def argv(self, *args: str) -> list[str]:
        folder = images_dir()
        root, runroot, tmp = self.storage, folder / f"run-{self.driver}", folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        command = ["env", f"TMPDIR={tmp}", "buildah", "--root", str(root), "--runroot", str(runroot)]
        command += ["--storage-driver", self.driver, *args]
        if folder.is_relative_to("/var/lib"):  # a cache there must stay writable
            return command
        private = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _READ_ONLY_VAR_LIB, "sh"]
        return [*private, *command]

    def run(self, step: str, *args: str, log: str) -> str:
        return _run(step, self.argv(*args), _log(log))

    def has_image(self, name: str) -> bool:
        argv = self.argv("inspect", "--type", "image", "--format", "{{.FromImageID}}", name)
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0


@functools.cache
def buildah() -> Buildah:
    """overlay where this kernel and file system allow it, else vfs (which copies every layer)."""
    ensure_host_tools()
    for driver in ("overlay", "vfs"):
        candidate = Buildah(driver)
        if subprocess.run(candidate.argv("info"), capture_output=True, check=False).returncode == 0:
            return candidate
    raise ImageError(f"buildah can use neither overlay nor vfs storage in {images_dir()}: see `buildah info`")


# --- wheelhouse -------------------------------------------------------------------------------------


def wanted_wheels() -> set[Pin]:
    """Every pin of images/requirements/*.txt: one package may be pinned at different versions in
    different images (python-dateutil 4 for the operator, 2.9 where pandas wants it)."""
    return {pin for lock in LOCKS for pin in pins(lock.path.read_text()).items()}


def ensure_wheelhouse() -> Path:
    """Fetches the wheels the requirement files pin that the wheelhouse lacks (once; torch is GBs)."""
    folder = wheelhouse_dir()
    with _build_lock(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if missing := missing_wheels(wanted_wheels(), [path.name for path in folder.iterdir()]):
            started = time.monotonic()
            progress(f"fetching {len(missing)} wheels into {folder}")
            _fetch(missing, folder)
            progress(f"fetched {len(missing)} wheels in {time.monotonic() - started:.0f}s")
        if still := missing_wheels(wanted_wheels(), [path.name for path in folder.iterdir()]):
            raise ImageError(f"no wheel in {folder} for {', '.join(f'{n}=={v}' for n, v in sorted(still))}")
    return folder


def uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        raise ImageError("'uv' is not on PATH: run from the project's venv (hack/venv.sh), or set UV")
    return uv


def fetch_rounds(missing: set[Pin]) -> list[dict[str, str]]:
    """The pins split so that no round names a package twice (pip refuses two versions of one)."""
    rounds: list[dict[str, str]] = []
    for name, version in sorted(missing):
        free = next((r for r in rounds if name not in r), None)
        if free is None:
            rounds.append(free := {})
        free[name] = version
    return rounds


def _fetch(missing: set[Pin], folder: Path) -> None:
    """`pip wheel` (a wheel for what PyPI has only as source) into a scratch folder, then moved in: a
    wheel in the wheelhouse is always complete."""
    scratch = folder / ".partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    requirements = scratch / "requirements.txt"
    # The wheels are for the images' CPython 3.11, whatever python runs this.
    argv = [uv(), "tool", "run", "--quiet", "--python", "3.11", "--from", "pip", "pip", "wheel"]
    argv += ["--no-cache-dir", "--no-deps", "--progress-bar", "off", "--wheel-dir", str(scratch)]
    for pinned in fetch_rounds(missing):
        requirements.write_text("".join(f"{name}=={version}\n" for name, version in pinned.items()))
        _run("fetching wheels (pip wheel)", [*argv, "-r", str(requirements)], _log("wheelhouse"))
    for wheel in scratch.glob("*.whl"):
        wheel.replace(folder / wheel.name)
    shutil.rmtree(scratch)


# --- bases ------------------------------------------------------------------------------------------


def ensure_base(kind: BaseKind) -> str:
    """The tag of a local base image, built when no image of its inputs exists (minutes, once)."""
    tag = base_tag(kind)
    with _build_lock(images_dir() / f"base-{kind}"):
        if buildah().has_image(tag):
            return tag
        started = time.monotonic()
        if kind == "torch":
            _build_torch_base(tag, ensure_base("git"), ensure_wheelhouse())
        else:
            _build_debian_base(tag, DEBIAN_PACKAGES[kind])
        progress(f"built the {kind} base {tag} in {time.monotonic() - started:.0f}s")
    return tag


def _build_debian_base(tag: str, packages: tuple[str, ...]) -> None:
    work = images_dir() / "rootfs" / tag.rpartition(":")[2]
    shutil.rmtree(work, ignore_errors=True)
    rootfs, archive, debs = work / "rootfs", work / "rootfs.tar", images_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    progress(f"debootstrap {DEBIAN_SUITE} with {', '.join(packages)} (about 2 minutes)")
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", f"--cache-dir={debs}"]
    _run("debootstrap", [*argv, DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR], _log("debootstrap"))
    _trim(rootfs)
    # A tar keeps the owners and modes (buildah copy would make every file root's).
    tar = ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."]
    _run("tar of the rootfs", tar, _log("tar"))
    _commit_container(tag, "scratch", lambda container: ["add", container, str(archive), "/"])
    shutil.rmtree(work)


def _trim(rootfs: Path) -> None:
    for relative in _TRIMMED:
        for child in (rootfs / relative).iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    # The runtime provides these; debootstrap copied the host's.
    for name in ("etc/hostname", "etc/resolv.conf"):
        (rootfs / name).unlink(missing_ok=True)


def _build_torch_base(tag: str, parent: str, wheelhouse: Path) -> None:
    progress(f"installing torch from {wheelhouse} into {parent} (minutes: several GB)")
    requirements = LOCKS_BY_NAME["torch"].path
    mounts = ["--volume", f"{wheelhouse}:/wheels:ro", "--volume", f"{requirements}:/tmp/torch.txt:ro"]
    run = ["run", "--isolation", "chroot", *mounts]
    _commit_container(tag, parent, lambda container: [*run, container, "--", "sh", "-c", _TORCH_INSTALL])


def _commit_container(tag: str, image: str, step: Callable[[str], list[str]]) -> None:
    """A working container from `image`, one buildah step (its arguments given the container) in it,
    committed as `tag`."""
    b = buildah()
    created = b.run(f"buildah from {image}", "from", "--pull=never", image, log="base")
    container = created.strip().splitlines()[-1]
    try:
        args = step(container)
        b.run(f"buildah {args[0]} for {tag}", *args, log="base")
        config = [arg for env in _BASE_ENV for arg in ("--env", env)]
        b.run("buildah config", "config", *config, "--cmd", "/bin/bash", container, log="base")
        b.run(f"buildah commit {tag}", "commit", "--rm", container, tag, log="base")
    except ImageError:
        subprocess.run(b.argv("rm", container), capture_output=True, check=False)
        raise


# --- images -----------------------------------------------------------------------------------------


def image_name(text: str) -> ImageName:
    """`text` as an image name, or an error that lists them."""
    for name in IMAGE_NAMES:
        if text == name:
            return name
    raise ImageError(f"unknown image {text!r}: choose among {', '.join(IMAGE_NAMES)}")


def build_image(name: ImageName) -> BuiltImage:
    """Builds one image from its Dockerfile on its local base, offline."""
    wheelhouse, base = ensure_wheelhouse(), ensure_base(IMAGES[name].base)
    tag = image_tag(name)
    with _build_lock(images_dir() / f"image-{name}"):
        started = time.monotonic()
        image_id = _bud(name, tag, base, wheelhouse)
        progress(f"built {tag} ({image_id[:12]}) in {time.monotonic() - started:.0f}s")
    b = buildah()
    try:
        oci = stored_image(b.storage, b.driver, image_id, tag)
    except OciError as error:
        raise ImageError(f"buildah's storage does not hold {tag} as expected: {error}") from error
    return BuiltImage(name=name, tag=tag, image_id=image_id, oci=oci)


def save_image(image: BuiltImage, archive: Path) -> None:
    """Writes the image as an OCI archive (`ctr images import`, `skopeo copy oci-archive:`)."""
    partial = archive.with_name(f".{archive.name}.partial")
    with partial.open("wb") as out:
        image.oci.write_layout(out)
    partial.replace(archive)


def _bud(name: ImageName, tag: str, base: str, wheelhouse: Path) -> str:
    """`buildah bud` of the image's Dockerfile, with layers cached; returns the image id."""
    iidfile = images_dir() / "logs" / f"{name}.iid"
    iidfile.parent.mkdir(parents=True, exist_ok=True)
    args = ["bud", "--layers", "--isolation", "chroot", "--pull=never", "--file", IMAGES[name].dockerfile]
    for build_arg in (f"BASE={base}", "PIP_NO_INDEX=1", "PIP_FIND_LINKS=/wheels"):
        args += ["--build-arg", build_arg]
    args += ["--volume", f"{wheelhouse}:/wheels:ro", "--iidfile", str(iidfile), "--tag", tag, str(ROOT)]
    progress(f"building {tag} from {IMAGES[name].dockerfile} on {base}")
    buildah().run(f"buildah bud of {tag}", *args, log=f"build-{name}")
    return iidfile.read_text().strip().removeprefix("sha256:")
