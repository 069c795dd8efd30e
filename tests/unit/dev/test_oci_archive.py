"""The OCI archives the dev cluster makes by hand (the pause image, the node tests' busybox) are
image layouts `ctr images import` reads: index → manifest → config and layer, digests that match."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from labtune_dev.node import _archive_image
from labtune_dev.pause_image import oci_archive


def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
    member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    assert member is not None
    data = member.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def test_archive_is_an_image_layout_with_matching_digests(tmp_path: Path) -> None:
    archive = tmp_path / "x.oci.tar"
    archive.write_bytes(oci_archive("labtune.local/tool:1", {"bin/tool": b"#!/bin/sh\n"}, ["/bin/tool"]))
    name, digest = _archive_image(archive)
    assert name == "labtune.local/tool:1"
    with tarfile.open(archive) as tar:
        assert json.load(tar.extractfile("oci-layout"))["imageLayoutVersion"] == "1.0.0"  # type: ignore[arg-type]
        manifest = json.loads(_blob(tar, digest))
        config = json.loads(_blob(tar, manifest["config"]["digest"]))
        (layer,) = manifest["layers"]
        layer_blob = _blob(tar, layer["digest"])
    assert config["config"]["Entrypoint"] == ["/bin/tool"]
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # uncompressed: the diff id is the digest
    with tarfile.open(fileobj=io.BytesIO(layer_blob)) as layer_tar:
        (member,) = layer_tar.getmembers()
    assert (member.name, member.mode) == ("bin/tool", 0o755)
