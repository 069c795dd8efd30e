"""The node agent's container launcher: joins the pod's network namespace, enters a private mount
and UTS namespace, mounts the pod's volumes where the container spec says, then execs the command.

It runs as `python -m labtune.devcluster.nodeagent_exec LAUNCH.json` (the node agent writes the
launch file), so the mounts and the namespace switch happen in the container's own process and
vanish with it. Linux and root only.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from pathlib import Path

from pydantic import BaseModel

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
EXIT_LAUNCH_FAILED = 128
"""What a container reports when its namespaces or mounts could not be set up (the log says why)."""


class Mount(BaseModel):
    source: str
    """Host path: a folder, or a file (ConfigMap subPath, termination log, /etc/hosts)."""
    target: str
    read_only: bool = False


class Launch(BaseModel):
    """Everything the launcher needs; written by the node agent as JSON."""

    netns: str | None
    """Path of the pod's network namespace (/var/run/netns/NAME); None: the host's."""
    hostname: str
    dev_dir: str
    """An empty host folder that becomes the container's /dev (a tmpfs with the usual devices)."""
    mounts: list[Mount]
    read_only_root: bool
    working_dir: str | None
    argv: list[str]
    env: dict[str, str]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _encode(value: str | None) -> bytes | None:
    return value.encode() if value is not None else None


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int) -> None:
    result = libc.mount(_encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), None)
    _check(result, f"mount {source} on {target}")


def _make_target(directory: bool, target: Path) -> None:
    """Creates the mount point like a container runtime does (a file for a file, else a folder).

    Outside the pod's /dev tmpfs this creates an empty folder or file on the host's root
    filesystem; the mount on it stays in the container's namespace."""
    if directory:
        target.mkdir(parents=True, exist_ok=True)
    elif not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def _populate_dev(libc: ctypes.CDLL, dev: Path) -> None:
    _mount(libc, "tmpfs", str(dev), "tmpfs", MS_NOSUID)
    for name in DEVICES:
        (dev / name).touch()
        _mount(libc, f"/dev/{name}", str(dev / name), None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        (dev / name).symlink_to(target)
    (dev / "stdout").symlink_to("/proc/self/fd/1")
    (dev / "stderr").symlink_to("/proc/self/fd/2")
    (dev / "shm").mkdir()


def enter(launch: Launch) -> None:
    """Sets up the container's namespaces and mounts in this process."""
    libc = _libc()
    if launch.netns is not None:
        fd = os.open(launch.netns, os.O_RDONLY)
        try:
            _check(libc.setns(fd, CLONE_NEWNET), f"setns {launch.netns}")
        finally:
            os.close(fd)
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing here propagates to the host
    name = launch.hostname.encode()
    _check(libc.sethostname(name, len(name)), "sethostname")
    # Parents before children (/artifacts before /artifacts/x), as the kubelet orders them.
    mounts = sorted(launch.mounts, key=lambda m: Path(m.target).parts)
    # Sources are held open first: the new /dev, or a mount on /tmp, must not hide sources that
    # live there (memory-backed emptyDirs are under /dev/shm).
    sources = [os.open(mount.source, os.O_PATH | os.O_CLOEXEC) for mount in mounts]
    _populate_dev(libc, Path(launch.dev_dir))
    _mount(libc, launch.dev_dir, "/dev", None, MS_BIND | MS_REC)
    for mount, source in zip(mounts, sources, strict=True):
        _make_target(stat.S_ISDIR(os.fstat(source).st_mode), Path(mount.target))
        _mount(libc, f"/proc/self/fd/{source}", mount.target, None, MS_BIND | MS_REC)
    # Read-only last: a nested mount point (/etc/labtune/pipeline) is made inside its parent volume.
    for mount in mounts:
        if mount.read_only:
            _mount(libc, None, mount.target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    if launch.read_only_root:
        _mount(libc, None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    if launch.working_dir:
        os.chdir(launch.working_dir)


def main() -> None:
    launch = Launch.model_validate_json(Path(sys.argv[1]).read_text())
    try:
        enter(launch)
        os.execvpe(launch.argv[0], launch.argv, launch.env)
    except OSError as error:
        print(f"node agent: cannot start the container: {error}", file=sys.stderr, flush=True)
        os._exit(EXIT_LAUNCH_FAILED)


if __name__ == "__main__":
    main()
