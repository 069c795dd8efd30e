"""Shared fixtures of the generator tests: real git repositories made from the sample taxonomy
in data/, and a deterministic fake teacher. tests/integration/generator re-uses them."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labtune.contract.generate import GenerateConfig
from labtune.generator.teacher import Completion, CompletionRequest, TeacherError

DATA = Path(__file__).parent / "data"


class Git:
    """The git CLI for test repositories (tests get it from the `git` fixture)."""

    @staticmethod
    def run(cwd: Path, *args: str) -> str:
        result = subprocess.run(
            ["git", "-c", "user.name=labtune", "-c", "user.email=labtune@example.com", *args],
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    @classmethod
    def commit_all(cls, repo: Path, message: str = "change") -> str:
        cls.run(repo, "add", "-A")
        cls.run(repo, "commit", "--quiet", "--allow-empty", "-m", message)
        return cls.run(repo, "rev-parse", "HEAD")

    @classmethod
    def new_repo(cls, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        cls.run(path, "init", "--quiet", "--initial-branch=main")
        return path


@pytest.fixture
def git() -> type[Git]:
    return Git


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A private CA and a serving certificate for 127.0.0.1 and localhost (PEM files)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        subject: str,
        issuer: str,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(
        certificate("test-ca", "test-ca", ca_key, ca_key, True).public_bytes(serialization.Encoding.PEM)
    )
    files.cert.write_bytes(
        certificate("127.0.0.1", "test-ca", key, ca_key, False).public_bytes(serialization.Encoding.PEM)
    )
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@pytest.fixture(name="make_tls")
def make_tls_fixture() -> Callable[[Path], TlsFiles]:
    return make_tls


@dataclass(frozen=True)
class SampleTaxonomy:
    root: Path
    commit: str
    documents: Path
    documents_commit: str


def make_sample_taxonomy(where: Path) -> SampleTaxonomy:
    """A taxonomy repository (one knowledge, one freeform, one grounded leaf) whose knowledge leaf
    points at a second repository holding its Markdown document."""
    documents = Git.new_repo(where / "documents")
    shutil.copytree(DATA / "documents", documents, dirs_exist_ok=True)
    documents_commit = Git.commit_all(documents, "documents")
    root = Git.new_repo(where / "taxonomy")
    shutil.copytree(DATA / "taxonomy", root, dirs_exist_ok=True)
    knowledge = root / "knowledge/astronomy/sun/qna.yaml"
    knowledge.write_text(
        knowledge.read_text()
        .replace("DOCUMENT_REPO", str(documents))
        .replace("DOCUMENT_COMMIT", documents_commit)
    )
    return SampleTaxonomy(root, Git.commit_all(root, "taxonomy"), documents, documents_commit)


@pytest.fixture
def sample_taxonomy(tmp_path: Path) -> SampleTaxonomy:
    return make_sample_taxonomy(tmp_path / "repos")


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., GenerateConfig]:
    """generate_config with `out` under the test's tmp_path."""
    return lambda sample, **overrides: generate_config(sample, tmp_path / "run", **overrides)


def generate_config(sample: SampleTaxonomy, out: Path, **overrides: object) -> GenerateConfig:
    """A config that runs by hand: local paths, no metrics port."""
    data: dict[str, object] = {
        "taxonomy": {"url": str(sample.root), "commit": sample.commit},
        "leaves": "all",
        "teacher": {"backend": "openai", "model": "fake-teacher", "url": "http://127.0.0.1:1/v1"},
        "scale": {"samplesPerSeed": 2, "chunkTokens": 128, "seed": 7},
        "output": str(out / "datasets"),
        "metricsPort": 0,
        "terminationLog": str(out / "termination-log"),
    }
    data.update(overrides)
    return GenerateConfig.model_validate(data)


def fake_reply(request: CompletionRequest) -> str | None:
    """A well-formed reply for each built-in prompt (told apart by its format instructions),
    unique per request seed."""
    prompt, n = request.prompt, request.seed
    if "Marked answer:" in prompt:  # the multiple-choice judge: it rejects the answers marked D
        return "Score: 0" if "Marked answer: D" in prompt else "Right, and the only one. Score: 1"
    if "Score:" in prompt:
        return "It is fine. Score: 3"
    if "multiple-choice test" in prompt:
        return "\n".join(
            f"Question: Question {n}-{k}?\nA) Yes {k}\nB) No {k}\nC) Maybe {k}\nD) Unsure {k}\n"
            f"Answer: {a}\n---"
            for k, a in (("a", "B"), ("b", "E"), ("c", "D"))
        )
    if '"Context: …", "Question: …" and "Answer: …"' in prompt:
        return f"Context: Country {n} has capital City {n}.\nQuestion: Which capital?\nAnswer: City {n}."
    if '"Answer: …"' in prompt:
        return "\n".join(f"Question: Question {n}-{k}?\nAnswer: Answer {k}.\n---" for k in "ab")
    if 'on a line "Question: …" followed by' in prompt:
        return f"Question: Question {n}?\n---\n"
    if 'starting with "Context:"' in prompt:
        return f"Here it is.\nContext: Country {n} has capital City {n}."
    if 'starting with "Question:"' in prompt:
        return f"Question: Question {n}?"
    return f"Answer {n}."


@dataclass
class FakeTeacher:
    """A deterministic teacher: `reply` maps a request to its text (None: the request was
    rejected); `fail_after` raises TeacherError once that many requests were answered."""

    reply: Callable[[CompletionRequest], str | None] = fake_reply
    fail_after: int | None = None
    requests: list[CompletionRequest] = field(default_factory=list)

    def rewrites(self) -> list[CompletionRequest]:
        """The requests of the built-in pipelines' auxiliary flow (documents rewritten)."""
        return [r for r in self.requests if r.prompt.startswith("You rewrite passages")]

    @property
    def model_name(self) -> str:
        return "fake-teacher"

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        replies = []
        for request in requests:
            if self.fail_after is not None and len(self.requests) >= self.fail_after:
                raise TeacherError("fake teacher is down")
            self.requests.append(request)
            text = self.reply(request)
            replies.append(Completion(text=text, prompt_tokens=len(request.prompt) // 4, completion_tokens=8))
        return replies

    async def aclose(self) -> None:
        return None


@pytest.fixture
def fake_teacher() -> type[FakeTeacher]:
    return FakeTeacher
