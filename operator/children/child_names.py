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
MAX_LABEL_VALUE = 63
# An Indexed Job's pods are named as hosts `<job>-<index>`, a DNS label of at most 63 characters:
# room for a two-digit index (TuningJob allows at most 64 nodes).
MAX_INDEXED_JOB_NAME = MAX_NAME - 3
_DIGEST_CHARS = 8
MAX_OUTPUT_FOLDER = 128


def kind_label(kind: str) -> str:
    """`labtune.io/<kind>`: the label naming the owning resource."""
    return f"{GROUP}/{kind.lower()}"


def _shortened(owner: str, room: int) -> str:
    """The owner name cut to `room` characters, ending in a digest of the whole name so that two
    long names sharing a prefix stay apart (and the cut never ends on `-` or `.`)."""
    digest = hashlib.sha256(owner.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{owner[: room - _DIGEST_CHARS - 1].rstrip('-.')}-{digest}"


def child_name(owner: str, suffix: str, limit: int = MAX_NAME) -> str:
    """`<owner>-<suffix>`, the owner part shortened with its digest when over `limit` characters
    (resource names may have 253; children that become labels or host names have 63)."""
    name = f"{owner}-{suffix}"
    return name if len(name) <= limit else f"{_shortened(owner, limit - len(suffix) - 1)}-{suffix}"


def dns_label_name(owner: str, suffix: str, limit: int = MAX_NAME) -> str:
    """A child name that must be a DNS label (a Service; an Indexed Job, whose pods' host names are
    `<job>-<index>`): no dots, which a resource name may have. Dots become dashes and a digest of the
    whole name is kept, so `a.b` and `a-b` never share children."""
    if "." not in owner:
        return child_name(owner, suffix, limit)
    room = limit - len(suffix) - 1
    return f"{_shortened(owner, min(room, len(owner) + _DIGEST_CHARS + 1)).replace('.', '-')}-{suffix}"


def service_name(owner: str, suffix: str) -> str:
    """A child Service's name: a DNS-1035 label, so it must also start with a letter where the
    owner's name may start with a digit."""
    name = dns_label_name(owner, suffix, MAX_NAME - 1)
    return name if name[0].isalpha() else f"s{name}"


def label_value(owner: str) -> str:
    """The owner's name as a label value: itself up to 63 characters, else shortened with a digest
    (the whole name is in the child's annotation of the same key and in its owner reference)."""
    return owner if len(owner) <= MAX_LABEL_VALUE else _shortened(owner, MAX_LABEL_VALUE)


def selector(kind: str, owner: str) -> dict[str, str]:
    """Labels every child of one resource carries (and is found by)."""
    return {MANAGED_BY: "labtune", kind_label(kind): label_value(owner)}


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
        "annotations": {kind_label(body["kind"]): body["metadata"]["name"]},
        "ownerReferences": [owner_reference(body)],
    }


def default_output(body: Mapping[str, Any], claim: str) -> str:
    """Artifact URI of a resource's outputs when the spec names none: unique per namespace, kind,
    name and uid, so runs never overwrite each other."""
    meta = body["metadata"]
    # One path segment; a file name has at most 255 bytes on common file systems.
    folder = child_name(meta["name"], meta["uid"][:8], MAX_OUTPUT_FOLDER)
    return f"pvc://{claim}/{meta['namespace']}/{body['kind'].lower()}/{folder}"
