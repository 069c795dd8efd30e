"""The image layouts the dev cluster writes (labtune_dev.oci) are what `ctr images import` reads:
index → manifest → config and layers, with digests that match; the layers the reader has are left
out; a layer whose bytes do not match its digest is an error, not a corrupt import."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile

import pytest
from ocitest import layout_bytes, layout_index

from labtune_dev.oci import Layer, OciError, image_from_files

IMAGE = image_from_files("labtune.local/tool:1", {"bin/tool": b"#!/bin/sh\n"}, ["/bin/tool"], "65532:65532")
(LAYER,) = IMAGE.layers
DATA = b"".join(LAYER.chunks())


def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
    member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    assert member is not None
    data = member.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def _tar(layout: bytes) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(layout))


def test_layout_is_an_image_layout_with_matching_digests() -> None:
    layout = layout_bytes(IMAGE)
    assert layout_index(io.BytesIO(layout)) == ("labtune.local/tool:1", IMAGE.manifest_digest)
    with _tar(layout) as tar:
        assert json.load(tar.extractfile("oci-layout"))["imageLayoutVersion"] == "1.0.0"  # type: ignore[arg-type]
        manifest = json.loads(_blob(tar, IMAGE.manifest_digest))
        config = json.loads(_blob(tar, manifest["config"]["digest"]))
        (layer,) = manifest["layers"]
        layer_blob = _blob(tar, layer["digest"])
    assert config["config"] == {"Entrypoint": ["/bin/tool"], "User": "65532:65532"}
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # uncompressed: the diff id is the digest
    with _tar(layer_blob) as layer_tar:
        (member,) = layer_tar.getmembers()
    assert (member.name, member.mode) == ("bin/tool", 0o755)


def test_layers_the_reader_has_are_left_out() -> None:
    out = io.BytesIO()
    assert IMAGE.write_layout(out, skip={LAYER.digest}) == 0
    with _tar(out.getvalue()) as tar:
        names = tar.getnames()
    assert f"blobs/sha256/{LAYER.digest.removeprefix('sha256:')}" not in names
    assert f"blobs/sha256/{IMAGE.manifest_digest.removeprefix('sha256:')}" in names


def test_layer_chunks_of_any_size_read_back_whole() -> None:
    # tarfile wants every read full: reads must span chunk boundaries.
    chunked = dataclasses.replace(
        IMAGE,
        layers=(Layer(LAYER.digest, LAYER.size, lambda: [DATA[i : i + 5] for i in range(0, len(DATA), 5)]),),
    )
    assert layout_bytes(chunked) == layout_bytes(IMAGE)


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([DATA[:-1] + bytes([DATA[-1] ^ 1])], "read back as"),
        ([DATA[:100]], "shorter"),
        ([DATA, b"", b"more"], "longer"),
    ],
    ids=["corrupt", "short", "long"],
)
def test_a_layer_that_reads_back_wrong_is_an_error(chunks: list[bytes], message: str) -> None:
    wrong = dataclasses.replace(IMAGE, layers=(Layer(LAYER.digest, LAYER.size, lambda: chunks),))
    with pytest.raises(OciError, match=message):
        wrong.write_layout(io.BytesIO())
