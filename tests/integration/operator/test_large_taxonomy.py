"""A Taxonomy of 2,100 leaves end to end through its sync: the operator's sync Job config, run by the
real `labtune taxonomy sync` against an https git server on loopback (the test plays the pod and the
kubelet: the Secret's files, the claim and the termination log are folders here), its real summary
reported on the Taxonomy. Status stays small: exact counts, the first errors and changed leaves,
the manifest's URI for the rest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from kubetest import Cluster, Kubelet, condition, eventually

from labtune.api import GROUP, VERSION
from labtune.contract.common import resolve_artifact
from labtune.contract.taxonomy_sync import LeafManifest, TaxonomySyncConfig
from labtune.operator.taxonomy.taxonomy_builders import sync_job_name
from labtune_dev.gitserver import git_server
from labtune_dev.template_taxonomy import (
    BASE_BRANCH,
    HEAD_BRANCH,
    TaxonomyShape,
    make_taxonomy,
    publish,
    sync_command,
)

pytestmark = pytest.mark.usefixtures("operator_process")
SHAPE = TaxonomyShape(leaves=2100, added=100, edited=200, invalid=80)
STATUS_LIMIT_BYTES = 16 * 1024
"""What the whole status may take: the summary (at most 4 KiB) and the conditions; a status that
grows with the taxonomy breaks it."""


def test_a_2100_leaf_taxonomy_end_to_end_through_sync(
    cluster: Cluster, kubelet: Kubelet, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    with git_server(served, tmp_path / "tls") as server:
        taxonomy = make_taxonomy(tmp_path / "repos", SHAPE, documents_url=f"{server.url}/documents.git")
        publish(taxonomy, served)
        cluster.create(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Taxonomy",
                "metadata": {"name": "large"},
                "spec": {
                    "source": {
                        "git": {
                            "url": f"{server.url}/taxonomy.git",
                            "ref": {"branch": HEAD_BRANCH},
                            "secretRef": {"name": "git"},
                        }
                    },
                    "base": f"origin/{BASE_BRANCH}",
                },
            }
        )
        job = cluster.job(sync_job_name("large", 1, None, 0))["metadata"]["name"]
        config_map = cluster.core.read_namespaced_config_map(job, cluster.namespace)
        config = TaxonomySyncConfig.model_validate(yaml.safe_load((config_map.data or {})["config.yaml"]))
        # What the pod has mounted, as folders of this machine: the Secret, the claim, the log.
        git = {"credentials_dir": str(server.credentials(tmp_path / "secret")), "ca_file": str(server.ca)}
        local = config.model_copy(
            update={
                "git": config.git.model_copy(update=git),
                "artifact_root": str(tmp_path / "claims"),
                "termination_log": str(tmp_path / "termination-log"),
                "metrics_port": 0,
            }
        )
        run = subprocess.run(sync_command(local, tmp_path), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr

    kubelet.finish(job, 0, Path(local.termination_log).read_text())

    status = cluster.status_when(
        "taxonomies", "large", lambda s: s.get("revision") == taxonomy.commit, "the revision", timeout=60
    )
    assert status["leafCounts"] == taxonomy.counts().model_dump(by_alias=True)
    assert status["leafCounts"]["total"] == SHAPE.leaves
    assert (status["changedLeafCount"], status["errorCount"]) == (len(taxonomy.changed), SHAPE.invalid)
    assert 0 < len(status["changedLeaves"]) <= 256
    assert status["changedLeaves"] == taxonomy.changed[: len(status["changedLeaves"])]
    assert 0 < len(status["errors"]) <= 50
    assert [e["path"] for e in status["errors"]] == taxonomy.invalid[: len(status["errors"])]
    assert status["manifest"] == config.manifest
    manifest = LeafManifest.model_validate_json(
        resolve_artifact(status["manifest"], local.artifact_root).read_text()
    )
    assert len(manifest.leaves) == SHAPE.leaves
    assert sum(len(leaf.errors) for leaf in manifest.leaves) == SHAPE.invalid

    validated = condition(status, "Validated")
    assert (validated["status"], validated["reason"]) == ("False", "ValidationFailed")
    assert validated["message"].startswith(f"{SHAPE.invalid} validation error(s) at {taxonomy.commit[:12]}")
    assert validated["message"].endswith(f"; all of them in {config.manifest}")
    assert condition(status, "Ready")["reason"] == "ValidationFailed"
    event = eventually(
        lambda: next((e for e in cluster.events("large") if e.reason == "ValidationFailed"), None),
        what="the ValidationFailed Event",
    )
    assert (event.type, event.message) == ("Warning", validated["message"])
    size = len(json.dumps(status, separators=(",", ":")).encode())
    print(f"Taxonomy status of {SHAPE.leaves} leaves: {size} bytes")
    assert size <= STATUS_LIMIT_BYTES
