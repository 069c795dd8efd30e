"""Names, labels and owner references of the objects the operator creates. Names are derived
from the owner only, so a restarted operator finds what it made instead of making it twice."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from labtune.api import API_VERSION, GROUP

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
MAX_NAME = 63  # Job names become pod label values


def kind_label(kind: str) -> str:
    """`labtune.io/<kind>`: the label naming the owning resource."""
    return f"{GROUP}/{kind.lower()}"


def child_name(owner: str, suffix: str) -> str:
    """`<owner>-<suffix>`, shortened with a digest of the owner name when over 63 characters."""
    name = f"{owner}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(owner.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{owner[:keep].rstrip('-.')}-{digest}-{suffix}"


def selector(kind: str, owner: str) -> dict[str, str]:
    """Labels every child of one resource carries (and is found by)."""
    return {MANAGED_BY: "labtune", kind_label(kind): owner}


def child_labels(body: Mapping[str, Any], component: str) -> dict[str, str]:
    labels = {**selector(body["kind"], body["metadata"]["name"]), COMPONENT: component}
    queue = (body["metadata"].get("labels") or {}).get(KUEUE_QUEUE)
    if queue:
        labels[KUEUE_QUEUE] = queue  # Kueue admits the child Job as it would a Job of the user's
    return labels


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(body: Mapping[str, Any], name: str, component: str) -> dict[str, Any]:
    """metadata of a child object: deterministic name, labels, owner reference for GC."""
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": child_labels(body, component),
        "ownerReferences": [owner_reference(body)],
    }


def default_output(body: Mapping[str, Any], claim: str) -> str:
    """Artifact URI of a resource's outputs when the spec names none: unique per namespace, kind,
    name and uid, so runs never overwrite each other."""
    meta = body["metadata"]
    return f"pvc://{claim}/{meta['namespace']}/{body['kind'].lower()}/{meta['name']}-{meta['uid'][:8]}"
