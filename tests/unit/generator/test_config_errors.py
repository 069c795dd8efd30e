"""Bad configuration of `labtune taxonomy sync` and `labtune generate`: exit code 78 and one line
on stderr, found before a teacher is made and before the output folder is touched; git failures
that retrying cannot help (no such repository, branch, tag or commit, credentials refused) exit 78
and those it may (connection refused, a 5xx) exit 1. Real git against local repositories and
https servers on loopback, and the real `labtune` entry point."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from labtune.contract import EXIT_CONFIG_ERROR, EXIT_FAILED, ConfigError
from labtune.contract.generate import GenerateConfig
from labtune.generator.pipeline import packaged_path
from labtune.generator.run import generate
from labtune_dev.gitserver import GitServer, git_server

if TYPE_CHECKING:
    from conftest import FakeTeacher, Git, SampleTaxonomy, TlsFiles

LABTUNE = str(Path(sys.executable).parent / "labtune")
KNOWLEDGE = "knowledge/astronomy/sun/qna.yaml"
MISSING_SHA = "deadbeef" * 5
NOT_OUR_REF = f"git upload-pack: not our ref {MISSING_SHA}"


def _labtune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LABTUNE, *args], capture_output=True, text=True, timeout=120, check=False)


def _error_line(run: subprocess.CompletedProcess[str], code: int = EXIT_CONFIG_ERROR) -> str:
    """The one line a failed pod leaves on stderr: no traceback, no multi-line dump."""
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _local(line: str) -> str:
    """A line about a local repository, as git's upload-pack prints it: the local transport prints
    that line and fetch's echo of it (`remote error: upload-pack: …`) in either order."""
    return line.replace("remote error: upload-pack:", "git upload-pack:")


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _sync(tmp_path: Path, git: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = {
        "git": git,
        "manifest": str(tmp_path / "mnt/manifest.json"),
        "terminationLog": str(tmp_path / "termination-log"),
        "metricsPort": 0,
    }
    return _labtune("taxonomy", "sync", "--config", str(_write(tmp_path / "sync.yaml", config)))


def _generate_config(tmp_path: Path, taxonomy: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "taxonomy": taxonomy,
        "leaves": "all",
        "teacher": {"model": "m", "url": "http://127.0.0.1:9/v1"},  # never asked: the config fails first
        "output": str(tmp_path / "out"),
        "metricsPort": 0,
        "terminationLog": str(tmp_path / "termination-log"),
        **overrides,
    }


def _generate(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return _labtune("generate", "--config", str(_write(tmp_path / "generate.yaml", config)))


def _summary(tmp_path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((tmp_path / "termination-log").read_text())
    return summary


# Class 4: bad configuration of the generator's pods.


@pytest.mark.parametrize("command", [["generate"], ["taxonomy", "sync"]])
def test_malformed_yaml_is_one_line_with_its_position(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("output: out\n  teacher: m\n")
    line = _error_line(_labtune(*command, "--config", str(config)))
    assert line == (
        f"error: config {config} is not valid YAML: line 2, column 10: mapping values are not allowed here"
    )


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("file", "output {root}/file is a file, not a folder"),
        ("file/out", "output {root}/file/out cannot be created: {root}/file is a file"),
    ],
)
def test_an_output_that_cannot_be_a_folder_fails_before_the_taxonomy_is_fetched(
    tmp_path: Path, output: str, message: str
) -> None:
    (tmp_path / "file").write_text("x")
    config = _generate_config(
        tmp_path, {"url": str(tmp_path / "no-such-repository")}, output=str(tmp_path / output)
    )
    line = _error_line(_generate(tmp_path, config))
    assert line == "error: " + message.format(root=tmp_path)
    assert (tmp_path / "file").read_text() == "x"
    assert not (tmp_path / "termination-log").exists()


def test_the_manifest_path_is_checked_before_the_clone(tmp_path: Path) -> None:
    (tmp_path / "mnt").write_text("not a folder")
    line = _error_line(_sync(tmp_path, {"url": str(tmp_path / "no-such-repository")}))
    manifest = tmp_path / "mnt/manifest.json"
    assert line == f"error: manifest {manifest} cannot be created: {tmp_path / 'mnt'} is a file"


def test_the_taxonomy_is_checked_before_the_teacher_loads_its_model(
    tmp_path: Path, sample_taxonomy: SampleTaxonomy
) -> None:
    # A teacher model that does not exist either: the taxonomy's error comes first, because the
    # taxonomy is checked before a teacher (and its model) is made.
    teacher = {"backend": "transformers", "model": str(tmp_path / "no-such-model")}
    taxonomy = {"url": str(sample_taxonomy.root), "commit": MISSING_SHA}
    line = _error_line(_generate(tmp_path, _generate_config(tmp_path, taxonomy, teacher=teacher)))
    assert line.startswith(f"error: cannot fetch commit {MISSING_SHA} from {sample_taxonomy.root}: ")
    assert line.endswith(f"not our ref {MISSING_SHA}")
    assert not (tmp_path / "out").exists()

    taxonomy = {"url": str(sample_taxonomy.root), "commit": sample_taxonomy.commit}
    line = _error_line(_generate(tmp_path, _generate_config(tmp_path, taxonomy, teacher=teacher)))
    assert line == f"error: teacher model {tmp_path / 'no-such-model'} does not exist"
    assert not (tmp_path / "out").exists()


def _without_knowledge_flow(folder: Path) -> Path:
    """The simple pipeline without its knowledge flow (prompt files stay where they are)."""
    builtin = packaged_path("simple")
    data = yaml.safe_load(builtin.read_text())
    del data["flows"]["knowledge"], data["auxiliary"]
    for flow in data["flows"].values():
        for block in flow["blocks"]:
            if "prompt_file" in block:
                block["prompt_file"] = str(builtin.parent / block["prompt_file"])
    return _write(folder / "pipeline.yaml", data)


def test_a_config_that_fails_validation_writes_nothing_and_the_corrected_one_runs(
    tmp_path: Path,
    sample_taxonomy: SampleTaxonomy,
    make_config: Callable[..., GenerateConfig],
    fake_teacher: type[FakeTeacher],
) -> None:
    # The skill leaves could run, but the knowledge leaf has no flow: found before any leaf runs.
    config = make_config(sample_taxonomy, pipeline={"path": str(_without_knowledge_flow(tmp_path))})
    output = Path(config.output)
    teacher = fake_teacher()
    with pytest.raises(ConfigError, match="pipeline 'simple' has no flow for knowledge leaves"):
        generate(config, teacher=teacher)
    assert not teacher.requests
    assert not output.exists()

    summary = generate(make_config(sample_taxonomy), teacher=fake_teacher())
    assert summary.leaves_done == 3
    assert (output / "knowledge.jsonl").is_file()


# Class 5: git failures, permanent (78, the Job fails at once) or transient (1, the Job retries).


@pytest.mark.parametrize(
    ("git_ref", "reason"),
    [
        ({"branch": "nope"}, "cannot fetch branch nope from {url}: couldn't find remote ref refs/heads/nope"),
        ({"tag": "v9"}, "cannot fetch tag v9 from {url}: couldn't find remote ref refs/tags/v9"),
        ({"commit": MISSING_SHA}, f"cannot fetch commit {MISSING_SHA} from {{url}}: {NOT_OUR_REF}"),
        ({"commit": "abcdef12"}, "cannot find commit abcdef12 in {url}"),
    ],
    ids=["branch", "tag", "commit", "abbreviated commit"],
)
def test_a_ref_that_does_not_exist_is_a_config_error(
    tmp_path: Path, sample_taxonomy: SampleTaxonomy, git_ref: dict[str, str], reason: str
) -> None:
    url = str(sample_taxonomy.root)
    line = _error_line(_sync(tmp_path, {"url": url, **git_ref}))
    assert _local(line) == "error: " + reason.format(url=url)
    assert not (tmp_path / "mnt").exists()


def test_a_repository_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    url = str(tmp_path / "missing")
    line = _error_line(_sync(tmp_path, {"url": url}))
    reason = f"'{url}' does not appear to be a git repository"
    assert line == f"error: cannot fetch the default branch from {url}: {reason}"


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[GitServer]:
    """An https git server on loopback with basic auth (alice, s3cret); see `_serve`."""
    served = tmp_path / "served"
    served.mkdir()
    with git_server(served, tmp_path / "tls", username="alice", password="s3cret") as server:
        yield server


def _serve(git: type[Git], server: GitServer, repo: Path, name: str) -> str:
    """Serves the repository as it is now at <server>/<name>.git; returns that URL."""
    bare = server.root / f"{name}.git"
    shutil.rmtree(bare, ignore_errors=True)
    git.run(server.root, "clone", "--quiet", "--mirror", str(repo), str(bare))
    return f"{server.url}/{name}.git"


def _credentials(folder: Path, username: str, password: str) -> str:
    folder.mkdir(exist_ok=True)
    (folder / "username").write_text(username)
    (folder / "password").write_text(password)
    return str(folder)


def test_refused_credentials_and_an_unknown_repository_over_https(
    tmp_path: Path, sample_taxonomy: SampleTaxonomy, git: type[Git], https_server: GitServer
) -> None:
    url = _serve(git, https_server, sample_taxonomy.root, "taxonomy")
    checkout = {"url": url, "caFile": str(https_server.ca)}
    wrong = _credentials(tmp_path / "wrong", "alice", "not-the-password")
    line = _error_line(_sync(tmp_path, {**checkout, "credentialsDir": wrong}))
    assert line == f"error: cannot fetch the default branch from {url}: Authentication failed for '{url}/'"

    # No credentials at all: git cannot ask for them (no terminal), which is no network blip either.
    line = _error_line(_sync(tmp_path, checkout))
    reason = f"could not read Username for '{https_server.url}': terminal prompts disabled"
    assert line == f"error: cannot fetch the default branch from {url}: {reason}"

    right = _credentials(tmp_path / "right", "alice", "s3cret")
    missing = f"{https_server.url}/nope.git"
    line = _error_line(_sync(tmp_path, {**checkout, "url": missing, "credentialsDir": right}))
    assert line == f"error: cannot fetch the default branch from {missing}: repository '{missing}/' not found"


def test_credentials_in_the_url_are_never_printed(
    tmp_path: Path, sample_taxonomy: SampleTaxonomy, git: type[Git], https_server: GitServer
) -> None:
    url = _serve(git, https_server, sample_taxonomy.root, "taxonomy")
    with_password = url.replace("https://", f"https://alice:{https_server.password}@")
    line = _error_line(_sync(tmp_path, {"url": with_password, "caFile": str(https_server.ca), "tag": "v9"}))
    assert line == f"error: cannot fetch tag v9 from {url}: couldn't find remote ref refs/tags/v9"


def _closed_port_url() -> str:
    """An https URL on loopback where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{probe.getsockname()[1]}/repository.git"


def test_a_refused_connection_is_transient(tmp_path: Path) -> None:
    url = _closed_port_url()
    line = _error_line(_sync(tmp_path, {"url": url}), EXIT_FAILED)
    assert line.startswith(f"error: cannot fetch the default branch from {url}: unable to access '{url}/': ")
    assert line.endswith("Couldn't connect to server")


@pytest.fixture
def unavailable_server(tmp_path: Path, make_tls: Callable[[Path], TlsFiles]) -> Iterator[tuple[str, Path]]:
    """An https server on loopback that answers every request 503 Service Unavailable: (URL, CA)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    tls = make_tls(tmp_path / "tls")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/taxonomy.git", tls.ca
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_error_is_transient(tmp_path: Path, unavailable_server: tuple[str, Path]) -> None:
    url, ca = unavailable_server
    line = _error_line(_sync(tmp_path, {"url": url, "caFile": str(ca)}), EXIT_FAILED)
    assert line.startswith(f"error: cannot fetch the default branch from {url}: ")
    assert line.endswith("The requested URL returned error: 503")


# Knowledge documents: fetched at sync time, a failure is a validation error on the leaf.


def _point_documents_at(
    taxonomy: SampleTaxonomy, git: type[Git], repo: str, commit: str, *leaves: str
) -> str:
    for leaf in leaves:
        path = taxonomy.root / leaf
        if not path.exists():
            path.parent.mkdir(parents=True)
            shutil.copy(taxonomy.root / KNOWLEDGE, path)
        text = path.read_text()
        path.write_text(
            text.replace(str(taxonomy.documents), repo).replace(taxonomy.documents_commit, commit)
        )
    return git.commit_all(taxonomy.root, "documents moved")


def _document_line(taxonomy: SampleTaxonomy, leaf: str) -> int:
    lines = (taxonomy.root / leaf).read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.strip().startswith("repo:"))


@pytest.mark.parametrize(
    ("repo", "commit", "reason"),
    [
        (None, MISSING_SHA, NOT_OUR_REF),
        ("missing-documents", None, "does not appear to be a git repository"),
    ],
    ids=["no such commit", "no such repository"],
)
def test_documents_that_cannot_be_fetched_are_an_error_on_their_leaves(
    tmp_path: Path,
    sample_taxonomy: SampleTaxonomy,
    git: type[Git],
    repo: str | None,
    commit: str | None,
    reason: str,
) -> None:
    repo = str(tmp_path / repo) if repo else str(sample_taxonomy.documents)
    commit = commit or sample_taxonomy.documents_commit
    other = "knowledge/astronomy/moon/qna.yaml"  # a second leaf with the same documents
    _point_documents_at(sample_taxonomy, git, repo, commit, KNOWLEDGE, other)
    run = _sync(tmp_path, {"url": str(sample_taxonomy.root)})
    assert run.returncode == 0, run.stderr
    summary = _summary(tmp_path)
    assert summary["errorCount"] == 2
    assert sorted(error["path"] for error in summary["errors"]) == [other, KNOWLEDGE]
    for error in summary["errors"]:
        assert error["line"] == _document_line(sample_taxonomy, error["path"])
        assert error["message"].startswith(f"knowledge documents: cannot fetch commit {commit} from {repo}: ")
        assert _local(error["message"]).endswith(reason)
    manifest = json.loads((tmp_path / "mnt/manifest.json").read_text())
    errors = {leaf["path"]: [e["message"] for e in leaf["errors"]] for leaf in manifest["leaves"]}
    assert errors[KNOWLEDGE] == errors[other] == [summary["errors"][0]["message"]]
    assert errors["compositional_skills/writing/haiku/qna.yaml"] == []


def test_documents_out_of_reach_for_now_fail_the_sync_to_be_retried(
    tmp_path: Path, sample_taxonomy: SampleTaxonomy, git: type[Git]
) -> None:
    documents = _closed_port_url()
    _point_documents_at(sample_taxonomy, git, documents, sample_taxonomy.documents_commit, KNOWLEDGE)
    line = _error_line(_sync(tmp_path, {"url": str(sample_taxonomy.root)}), EXIT_FAILED)
    commit = sample_taxonomy.documents_commit
    assert line.startswith(f"error: knowledge documents: cannot fetch commit {commit} from {documents}: ")
    assert line.endswith("Couldn't connect to server")
    assert not (tmp_path / "mnt").exists()


def test_documents_over_https_are_checked_with_the_taxonomy_credentials(
    tmp_path: Path, sample_taxonomy: SampleTaxonomy, git: type[Git], https_server: GitServer
) -> None:
    documents = _serve(git, https_server, sample_taxonomy.documents, "documents")
    checkout = {
        "caFile": str(https_server.ca),
        "credentialsDir": _credentials(tmp_path / "right", "alice", "s3cret"),
    }

    _point_documents_at(sample_taxonomy, git, documents, sample_taxonomy.documents_commit, KNOWLEDGE)
    run = _sync(tmp_path, {**checkout, "url": _serve(git, https_server, sample_taxonomy.root, "taxonomy")})
    assert run.returncode == 0, run.stderr
    assert _summary(tmp_path)["errorCount"] == 0

    _point_documents_at(sample_taxonomy, git, documents, MISSING_SHA, KNOWLEDGE)
    run = _sync(tmp_path, {**checkout, "url": _serve(git, https_server, sample_taxonomy.root, "taxonomy")})
    assert run.returncode == 0, run.stderr
    (error,) = _summary(tmp_path)["errors"]
    assert error["message"] == (
        f"knowledge documents: cannot fetch commit {MISSING_SHA} from {documents}: "
        f"remote error: upload-pack: not our ref {MISSING_SHA}"
    )


def test_generate_with_documents_that_cannot_be_fetched_is_a_config_error(
    tmp_path: Path, sample_taxonomy: SampleTaxonomy, git: type[Git]
) -> None:
    documents = sample_taxonomy.documents
    commit = _point_documents_at(sample_taxonomy, git, str(documents), MISSING_SHA, KNOWLEDGE)
    config = _generate_config(tmp_path, {"url": str(sample_taxonomy.root), "commit": commit})
    line = _error_line(_generate(tmp_path, config))
    assert (
        _local(line)
        == f"error: knowledge documents: cannot fetch commit {MISSING_SHA} from {documents}: {NOT_OUR_REF}"
    )
    assert not (tmp_path / "out").exists()
