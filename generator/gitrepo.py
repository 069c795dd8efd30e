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

from labtune.contract import ConfigError
from labtune.contract.taxonomy_sync import GitCheckout

# Protocols a clone may use: the CRD allows https and ssh; local paths serve runs by hand. This
# rules out ext:: (arbitrary commands) and unencrypted transports.
ALLOWED_PROTOCOLS = "https:ssh:file"
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_POLL_SECONDS = 0.2

# How git's stderr lines tell a failure that retrying cannot help (the pod exits with the config
# error code and its Job fails at once) from one that it may (a network blip, a busy server: the Job
# retries the pod). Git prints the cause first and generic lines after it ("Could not read from
# remote repository"), so the first line that matches decides; an HTTP status decides before words.
_HTTP_STATUS = re.compile(r"(?:returned error:|HTTP) (\d{3})\b")
_RETRYABLE_HTTP = {408, 429}
_TRANSIENT = re.compile(
    r"could not resolve host|temporary failure in name resolution|connection refused|connection reset"
    r"|timed out|couldn't connect to server|failed to connect|network is unreachable|no route to host"
    r"|rpc failed|early eof|unexpected disconnect|the remote end hung up",
    re.IGNORECASE,
)
_PERMANENT = re.compile(
    r"repository .*not found|does not appear to be a git repository|could not read (?:username|password)"
    r"|authentication failed|permission denied|host key verification failed|remote branch .* not found"
    r"|couldn't find remote ref|not our ref|unknown revision|transport .* not allowed|certificate",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class GitError(Exception):
    """A git operation failed and retrying may help (network, server, time limit); the message
    is one line naming what and why."""


class GitConfigError(GitError, ConfigError):
    """A git operation failed for a reason retrying cannot help: no such repository, branch, tag
    or commit, credentials refused, a limit of the config exceeded."""


def redacted(text: str) -> str:
    """`text` without the credentials of any URL in it (`https://user:token@host` -> `https://host`)."""
    return _USERINFO.sub("", text)


def _permanent(line: str) -> bool | None:
    """Whether git's stderr line names a permanent failure, a transient one, or neither (None)."""
    if status := _HTTP_STATUS.search(line):
        code = int(status.group(1))
        return 400 <= code < 500 and code not in _RETRYABLE_HTTP
    if _TRANSIENT.search(line):
        return False
    return True if _PERMANENT.search(line) else None


def _failure(what: str, stderr: str, returncode: int) -> GitError:
    """`what` failed: with git's line that says why (not the advice after it), typed by whether
    retrying can help; a failure git does not explain is taken as transient."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    verdicts = [(line, verdict) for line in lines if (verdict := _permanent(line)) is not None]
    if verdicts:
        line, permanent = verdicts[0]
    else:
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        line, permanent = (fatal or lines or [f"exit code {returncode}"])[0], False
    reason = redacted(line.removeprefix("fatal: ").removeprefix("error: "))
    return (GitConfigError if permanent else GitError)(f"{what}: {reason}")


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

    def run(self, *args: str, check: bool = True, what: str = "") -> subprocess.CompletedProcess[str]:
        """Runs git; `what` names the step in errors (default: the git command)."""
        what = what or f"git {args[0]} failed"
        # Files, not pipes: git is polled while it runs, and a full pipe would block it.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.Popen(["git", *args], cwd=self.repo, env=self.env, stdout=out, stderr=err)
            killed = self._watch(process, what)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read().strip()
        if killed:
            raise killed
        if check and process.returncode != 0:
            raise _failure(what, stderr, process.returncode)
        return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)

    def _watch(self, process: subprocess.Popen[bytes], what: str) -> GitError | None:
        """Waits for git, killing it past the deadline or the size limit; returns why it was killed."""
        # Past the size limit a retry fetches the same bytes again; past the deadline it may be faster.
        too_big = GitConfigError(f"{what}: repository exceeds the {self.max_bytes} byte limit")
        while True:
            try:
                process.wait(timeout=_POLL_SECONDS)
                return too_big if _tree_size(self.repo) > self.max_bytes else None
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > self.deadline:
                reason = GitError(f"{what}: git took longer than {self.timeout:.0f}s")
            elif _tree_size(self.repo) > self.max_bytes:
                reason = too_big
            else:
                continue
            process.kill()
            process.wait()
            return reason


def _target_refspec(checkout: GitCheckout) -> tuple[str, str]:
    """(refspec to fetch, revision it names once fetched) for the checkout's ref."""
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


@contextmanager
def _remote(checkout: GitCheckout, dest: Path) -> Iterator[_Session]:
    """Git in a new repository at `dest` whose origin is the checkout's URL, with its credentials."""
    dest.mkdir(parents=True, exist_ok=True)
    with _scratch() as scratch:
        env = _base_env(scratch) | _credential_env(checkout, scratch)
        git = _Session(dest, env, checkout.timeout_seconds, checkout.max_bytes)
        git.run("init", "--quiet")
        git.run("remote", "add", "origin", checkout.url)
        yield git


def _fetch(git: _Session, checkout: GitCheckout, *, base: str, contents: bool) -> str:
    """Fetches the checkout's revision (and the diff base, unless `empty`) and returns its commit
    SHA: depth 1 when no base is wanted; without file contents, or with none at all (commits only,
    `contents=False`), where more history is fetched."""
    refspec, target = _target_refspec(checkout)
    # An abbreviated commit cannot be fetched by name: fetch every branch and tag and resolve it.
    abbreviated = bool(checkout.commit) and not _FULL_SHA.match(checkout.commit or "")
    refspecs = (
        ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"] if abbreviated else [refspec]
    )
    shallow = base == "empty" and not abbreviated
    options = ["--depth=1"] if shallow else []
    if not contents:
        options.append("--filter=tree:0")
    elif not shallow:
        options.append("--filter=blob:none")
    if base != "empty":
        refspecs.append(_base_refspec(base))
    ref, url = _ref_name(checkout), redacted(checkout.url)
    fetch = ("fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--update-head-ok", *options)
    git.run(*fetch, "origin", *refspecs, what=f"cannot fetch {ref} from {url}")
    resolved = git.run("rev-parse", "--verify", "--quiet", f"{target}^{{commit}}", check=False)
    if resolved.returncode != 0:
        raise GitConfigError(f"cannot find {ref} in {url}")
    return resolved.stdout.strip()


def clone(checkout: GitCheckout, dest: Path, *, base: str = "empty") -> str:
    """Checks out one revision of a repository into `dest` and returns its full commit SHA.

    Shallow (depth 1) unless a diff base is wanted, then the history without file contents
    (`--filter=blob:none`) so the merge base can be found; never submodules. GitConfigError when
    retrying cannot help, GitError when it may."""
    with _remote(checkout, dest) as git:
        commit = _fetch(git, checkout, base=base, contents=True)
        git.run("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit)
        return commit


def probe(checkout: GitCheckout) -> str:
    """Proves that the checkout's revision can be fetched, cheaply (its commit, not its files, into
    a scratch folder); returns its commit SHA. Raises as `clone` does."""
    with _scratch() as scratch, _remote(checkout, scratch / "repo") as git:
        return _fetch(git, checkout, base="empty", contents=False)


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
        raise GitConfigError(f"cannot find the taxonomy base ref {base!r} in {repo}")
    merge_base = git.run("merge-base", "HEAD", base, check=False)
    if merge_base.returncode != 0:
        raise GitConfigError(f"HEAD and the taxonomy base {base!r} have no common ancestor")
    diff = git.run("diff", "--name-only", "--no-renames", "--diff-filter=d", "-z", merge_base.stdout.strip())
    untracked = git.run("ls-files", "--others", "--exclude-standard", "-z")
    names = {n for n in (diff.stdout + "\0" + untracked.stdout).split("\0") if n}
    return sorted(names)
