"""Git through the `git` CLI: bounded clones of one revision, credentials from mounted files,
and InstructLab's changed-leaf detection (`ilab taxonomy diff`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labtune.contract.taxonomy import GitCheckout

# Protocols a clone may use: the CRD allows https and ssh; local paths serve runs by hand. This
# rules out ext:: (arbitrary commands) and unencrypted transports.
ALLOWED_PROTOCOLS = "https:ssh:file"
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_POLL_SECONDS = 0.2


class GitError(Exception):
    """A git operation failed; the message is one line naming what and why."""


def _base_env(home: Path) -> dict[str, str]:
    # No user or system config (a pod's image or a developer's ~/.gitconfig must not change the
    # result) and never an interactive prompt.
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
        "GIT_SSH_VARIANT": "ssh",
    }


def _credential_env(checkout: GitCheckout, scratch: Path) -> dict[str, str]:
    """Environment that hands git the mounted credentials without putting them on a command line."""
    env: dict[str, str] = {}
    creds = Path(checkout.credentials_dir) if checkout.credentials_dir else None
    # A CA in the mounted Secret (`ca.crt`, as Flux's GitRepository Secrets carry it) serves when
    # the config names none: the operator mounts the Secret without reading it.
    secret_ca = creds / "ca.crt" if creds else None
    if checkout.ca_file:
        env["GIT_SSL_CAINFO"] = checkout.ca_file
    elif secret_ca and secret_ca.is_file():
        env["GIT_SSL_CAINFO"] = str(secret_ca)
    if creds is None:
        return env
    if (creds / "password").is_file():
        askpass = scratch / "askpass"
        askpass.write_text(
            '#!/bin/sh\ncase "$1" in\n  Username*) cat "$LABTUNE_GIT_CREDENTIALS/username" ;;\n'
            '  *) cat "$LABTUNE_GIT_CREDENTIALS/password" ;;\nesac\n'
        )
        askpass.chmod(0o700)
        env |= {"GIT_ASKPASS": str(askpass), "LABTUNE_GIT_CREDENTIALS": str(creds)}
    if (creds / "ssh-privatekey").is_file():
        # ssh refuses a key readable by others, which a mounted Secret usually is: use a copy.
        key = scratch / "id"
        key.write_bytes((creds / "ssh-privatekey").read_bytes())
        key.chmod(0o600)
        known_hosts = creds / "known_hosts"
        checking = (
            f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
            if known_hosts.is_file()
            else "-o StrictHostKeyChecking=accept-new"
        )
        env["GIT_SSH_COMMAND"] = f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes {checking}"
    return env


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class _Session:
    """Runs git commands in one repository against one deadline and one size limit."""

    def __init__(self, repo: Path, env: dict[str, str], timeout: float, max_bytes: int) -> None:
        self.repo, self.env, self.max_bytes = repo, env, max_bytes
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: git is polled while it runs, and a full pipe would block it.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.Popen(["git", *args], cwd=self.repo, env=self.env, stdout=out, stderr=err)
            failure = self._watch(process)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read().strip()
        if failure:
            raise GitError(failure)
        if check and process.returncode != 0:
            last = stderr.splitlines()[-1] if stderr else f"exit code {process.returncode}"
            raise GitError(f"git {args[0]} failed: {last}")
        return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)

    def _watch(self, process: subprocess.Popen[bytes]) -> str | None:
        """Waits for git, killing it past the deadline or the size limit; returns why it was killed."""
        too_big = f"repository exceeds the {self.max_bytes} byte limit"
        while True:
            try:
                process.wait(timeout=_POLL_SECONDS)
                return too_big if _tree_size(self.repo) > self.max_bytes else None
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > self.deadline:
                reason = f"git took longer than {self.timeout:.0f}s"
            elif _tree_size(self.repo) > self.max_bytes:
                reason = too_big
            else:
                continue
            process.kill()
            process.wait()
            return reason


def _target_refspec(checkout: GitCheckout) -> tuple[str, str]:
    """(refspec to fetch, revision to check out) for the checkout's ref."""
    if checkout.branch:
        return f"+refs/heads/{checkout.branch}:refs/remotes/origin/{checkout.branch}", (
            f"refs/remotes/origin/{checkout.branch}"
        )
    if checkout.tag:
        return f"+refs/tags/{checkout.tag}:refs/tags/{checkout.tag}", f"refs/tags/{checkout.tag}"
    if checkout.commit:
        return checkout.commit, checkout.commit
    return "+HEAD:refs/remotes/origin/HEAD", "refs/remotes/origin/HEAD"


def _base_refspec(base: str) -> str:
    """Fetches the diff base under the name the user gave: `origin/main`, `main` or a commit."""
    if _FULL_SHA.match(base):
        return base
    branch = base.removeprefix("origin/")
    local = f"refs/remotes/origin/{branch}" if base.startswith("origin/") else f"refs/heads/{branch}"
    return f"+refs/heads/{branch}:{local}"


@contextmanager
def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="labtune-git-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def clone(checkout: GitCheckout, dest: Path, *, base: str = "empty") -> str:
    """Checks out one revision of a repository into `dest` and returns its full commit SHA.

    Shallow (depth 1) unless a diff base is wanted, then the history without file contents
    (`--filter=blob:none`) so the merge base can be found; never submodules."""
    dest.mkdir(parents=True, exist_ok=True)
    with _scratch() as scratch:
        env = _base_env(scratch) | _credential_env(checkout, scratch)
        git = _Session(dest, env, checkout.timeout_seconds, checkout.max_bytes)
        git.run("init", "--quiet")
        git.run("remote", "add", "origin", checkout.url)
        refspec, target = _target_refspec(checkout)
        # An abbreviated commit cannot be fetched by name: fetch every branch and tag and resolve it.
        abbreviated = bool(checkout.commit) and not _FULL_SHA.match(checkout.commit or "")
        refspecs = (
            ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"] if abbreviated else [refspec]
        )
        depth = ["--depth=1"] if base == "empty" and not abbreviated else ["--filter=blob:none"]
        if base != "empty":
            refspecs.append(_base_refspec(base))
        fetch = ("fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--update-head-ok", *depth)
        try:
            git.run(*fetch, "origin", *refspecs)
        except GitError as error:
            raise GitError(f"cannot fetch {_ref_name(checkout)} from {checkout.url}: {error}") from None
        git.run("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", target)
        return git.run("rev-parse", "HEAD").stdout.strip()


def _ref_name(checkout: GitCheckout) -> str:
    return (
        f"branch {checkout.branch}"
        if checkout.branch
        else f"tag {checkout.tag}"
        if checkout.tag
        else f"commit {checkout.commit}"
        if checkout.commit
        else "the default branch"
    )


def _local(repo: Path) -> _Session:
    return _Session(repo, _base_env(repo), timeout=120, max_bytes=2**62)


def changed_files(repo: Path, base: str) -> list[str]:
    """Files added or modified since the merge base of HEAD and `base`, in the working tree
    (staged or not), plus untracked files: what `ilab taxonomy diff` counts as changed."""
    git = _local(repo)
    if git.run("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False).returncode != 0:
        raise GitError(f"cannot find the taxonomy base ref {base!r} in {repo}")
    merge_base = git.run("merge-base", "HEAD", base, check=False)
    if merge_base.returncode != 0:
        raise GitError(f"HEAD and the taxonomy base {base!r} have no common ancestor")
    diff = git.run("diff", "--name-only", "--no-renames", "--diff-filter=d", "-z", merge_base.stdout.strip())
    untracked = git.run("ls-files", "--others", "--exclude-standard", "-z")
    names = {n for n in (diff.stdout + "\0" + untracked.stdout).split("\0") if n}
    return sorted(names)
