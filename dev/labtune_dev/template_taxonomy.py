"""A taxonomy of any size made from the demo's three leaves as templates, in real git repositories:
for the large-taxonomy tests and the taxonomy scale benchmark.

Leaf i is, in turn, a knowledge, a freeform skill and a grounded skill leaf (i mod 3): the demo's
leaf of that type (`examples/demo/taxonomy/`), made unique by its `created_by`; the knowledge leaves
point at the demo's document in a second repository. Branch `main` holds the first
`leaves - added` leaves; branch `feature` adds the last `added` and edits `edited` of main's, so a
sync of `feature` against `origin/main` counts exactly `added + edited` changed leaves. Each of the
`invalid` leaves (spread over all of them) has exactly one validation error: an unsupported schema
`version`.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from labtune.api.taxonomy_types import LeafCounts
from labtune.contract.common import LeafType
from labtune.contract.taxonomy_sync import GitCheckout, TaxonomySyncConfig
from labtune_dev.gitserver import GitServer

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
TEMPLATES: dict[LeafType, str] = {
    "knowledge": "knowledge/geography/veltrane/qna.yaml",
    "freeform_skill": "compositional_skills/writing/haiku/qna.yaml",
    "grounded_skill": "compositional_skills/extraction/capitals/qna.yaml",
}
TYPES: tuple[LeafType, ...] = tuple(TEMPLATES)
BASE_BRANCH, HEAD_BRANCH = "main", "feature"
INVALID_VERSION = 99
"""The `version` of an invalid leaf: instructlab-schema has no such schema (one error)."""
LABTUNE = str(Path(sys.executable).parent / "labtune")
"""The `labtune` command of this environment."""


def git(folder: Path, *args: str) -> str:
    """Runs git in `folder` as a fixed identity; its output."""
    identity = ["-c", "user.name=labtune", "-c", "user.email=labtune@example.com"]
    done = subprocess.run(["git", *identity, *args], cwd=folder, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def commit_all(folder: Path, message: str) -> str:
    """Commits everything in `folder`; the commit's SHA."""
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", message)
    return git(folder, "rev-parse", "HEAD")


def new_repo(folder: Path) -> Path:
    """A new repository at `folder`, on branch `main`."""
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", BASE_BRANCH)
    return folder


def _spread(count: int, among: range) -> list[int]:
    """`count` indexes of `among`, evenly spaced."""
    if count > len(among):
        raise ValueError(f"cannot pick {count} of {len(among)} leaves")
    return [among[k * len(among) // count] for k in range(count)]


@dataclass(frozen=True)
class TaxonomyShape:
    """How many leaves, and how many of them are added and edited on `feature`, or invalid."""

    leaves: int = 2100
    added: int = 100
    edited: int = 150
    invalid: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.added <= self.leaves or self.edited > self.leaves - self.added:
            raise ValueError(f"{self}: added and edited leaves must be leaves of the taxonomy")


@dataclass(frozen=True)
class TemplateTaxonomy:
    """The repositories made and what a sync of `feature` against `origin/main` must find."""

    root: Path
    """The taxonomy's working repository, `feature` checked out."""
    documents: Path
    """The repository of the knowledge leaves' document."""
    base_commit: str
    """The tip of `main`."""
    commit: str
    """The tip of `feature`."""
    leaves: dict[str, LeafType]
    """Every leaf's path and type."""
    changed: list[str]
    """Leaves added or edited on `feature`, sorted."""
    invalid: list[str]
    """Leaves with one validation error each, sorted."""

    def counts(self) -> LeafCounts:
        by_type = Counter(self.leaves.values())
        return LeafCounts(
            knowledge=by_type["knowledge"],
            freeform_skills=by_type["freeform_skill"],
            grounded_skills=by_type["grounded_skill"],
            total=len(self.leaves),
        )


def leaf_path(index: int) -> str:
    """Leaf `index`'s qna.yaml, beside its template's folder, a hundred leaves a folder."""
    template = Path(TEMPLATES[TYPES[index % len(TYPES)]])
    return f"{template.parent.parent}/scale-{index // 100:03d}/leaf-{index:05d}/qna.yaml"


def _leaf_text(template: str, index: int, revision: int, invalid: bool) -> str:
    text = template.replace("created_by: labtune-demo", f"created_by: labtune-scale-{index:05d}-r{revision}")
    return text.replace("version: 3", f"version: {INVALID_VERSION}", 1) if invalid else text


def make_taxonomy(where: Path, shape: TaxonomyShape, documents_url: str | None = None) -> TemplateTaxonomy:
    """The repositories under `where` (`taxonomy`, `documents`); the knowledge leaves name the
    documents as `documents_url` (where they will be served; the local repository when None)."""
    documents = new_repo(where / "documents")
    (documents / "veltrane.md").write_text((DEMO / "documents" / "veltrane.md").read_text())
    documents_commit = commit_all(documents, "documents")
    templates = {
        kind: (DEMO / "taxonomy" / path)
        .read_text()
        .replace("DOCUMENT_REPO", documents_url or str(documents))
        .replace("DOCUMENT_COMMIT", documents_commit)
        for kind, path in TEMPLATES.items()
    }
    invalid = set(_spread(shape.invalid, range(shape.leaves)))
    on_main = range(shape.leaves - shape.added)
    edited = _spread(shape.edited, on_main)
    root = new_repo(where / "taxonomy")

    def write(indexes: list[int] | range, revision: int) -> None:
        for index in indexes:
            path = root / leaf_path(index)
            path.parent.mkdir(parents=True, exist_ok=True)
            template = templates[TYPES[index % len(TYPES)]]
            path.write_text(_leaf_text(template, index, revision, index in invalid))

    write(on_main, 0)
    base_commit = commit_all(root, f"{len(on_main)} leaves")
    git(root, "checkout", "-q", "-b", HEAD_BRANCH)
    added = range(len(on_main), shape.leaves)
    write(edited, 1)
    write(added, 0)
    commit = commit_all(root, f"{len(added)} leaves added, {len(edited)} edited")
    return TemplateTaxonomy(
        root=root,
        documents=documents,
        base_commit=base_commit,
        commit=commit,
        leaves={leaf_path(i): TYPES[i % len(TYPES)] for i in range(shape.leaves)},
        changed=sorted(leaf_path(i) for i in [*edited, *added]),
        invalid=sorted(leaf_path(i) for i in invalid),
    )


def publish(taxonomy: TemplateTaxonomy, served: Path) -> None:
    """Bare copies of both repositories in `served` (a git server's folder), as `taxonomy.git` and
    `documents.git`, every branch included."""
    for name, repo in (("taxonomy", taxonomy.root), ("documents", taxonomy.documents)):
        bare = served / f"{name}.git"
        git(served, "clone", "-q", "--mirror", str(repo), str(bare))
        git(bare, "config", "uploadpack.allowFilter", "true")  # the sync's filtered clone


def sync_config(server: GitServer, folder: Path) -> TaxonomySyncConfig:
    """A sync of `feature` against `origin/main` from `server` (its CA, its Secret's files), as the
    pod would run it, with the claim and the termination log in `folder`."""
    return TaxonomySyncConfig(
        git=GitCheckout(
            url=f"{server.url}/taxonomy.git",
            branch=HEAD_BRANCH,
            credentials_dir=str(server.credentials(folder / "secret")),
            ca_file=str(server.ca),
        ),
        base=f"origin/{BASE_BRANCH}",
        manifest="pvc://artifacts/taxonomy/manifest.json",
        artifact_root=str(folder / "claims"),
        termination_log=str(folder / "termination-log"),
        metrics_port=0,
    )


def sync_command(config: TaxonomySyncConfig, folder: Path) -> list[str]:
    """`labtune taxonomy sync --config FILE` (the pod's command) with `config` written to `folder`."""
    path = folder / "sync.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return [LABTUNE, "taxonomy", "sync", "--config", str(path)]
