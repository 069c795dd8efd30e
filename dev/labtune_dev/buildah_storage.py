"""An image in buildah's containers-storage, read as an OCI image straight from the files: the
manifest and config as stored, and each layer's tar put back together from its tar-split (the tar's
headers and padding, kept at commit) and the layer's files.

buildah 1.28's own export (`buildah push`) compresses and rewrites every layer, 8 GB for a torch
image, whatever the destination holds; read this way, a layer that the node has is never read."""

from __future__ import annotations

import base64
import functools
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labtune_dev.oci import MEDIA_LAYER, MEDIA_MANIFEST, Layer, OciError, OciImage

_READ_CHUNK = 1 << 20
_TAR_SPLIT_SEGMENT = 2  # raw bytes (headers, padding); type 1 is a file entry, its content on disk


def stored_image(storage: Path, driver: str, image_id: str, name: str) -> OciImage:
    """The image `image_id` in the storage at `storage` (driver "overlay" or "vfs"), named `name`."""
    image_dir = storage / f"{driver}-images" / image_id
    config_key = base64.b64encode(f"sha256:{image_id}".encode()).decode()
    try:
        manifest = (image_dir / "manifest").read_bytes()
        config = (image_dir / f"={config_key}").read_bytes()
    except FileNotFoundError as error:
        raise OciError(f"no image {image_id} in {storage}: {error.filename} is missing") from error
    parsed = json.loads(manifest)
    if parsed.get("mediaType") != MEDIA_MANIFEST:
        raise OciError(f"image {image_id} has a {parsed.get('mediaType')} manifest, not an OCI one")
    by_digest = _layers_by_diff_digest(storage, driver)
    layers = []
    for entry in parsed["layers"]:
        digest = entry["digest"]
        if entry["mediaType"] != MEDIA_LAYER or digest not in by_digest:
            raise OciError(
                f"image {image_id}: layer {digest} ({entry['mediaType']}) is not stored uncompressed"
            )
        chunks = functools.partial(_layer_tar, storage, driver, by_digest[digest])
        layers.append(Layer(digest=digest, size=int(entry["size"]), chunks=chunks))
    return OciImage(name=name, manifest=manifest, config=config, layers=tuple(layers))


def _layers_by_diff_digest(storage: Path, driver: str) -> dict[str, str]:
    """diff digest → layer id, of every layer in the storage."""
    layers: list[dict[str, Any]] = []
    for file in ("layers.json", "volatile-layers.json"):
        path = storage / f"{driver}-layers" / file
        if path.is_file():
            layers += json.loads(path.read_text())
    return {layer["diff-digest"]: layer["id"] for layer in layers if "diff-digest" in layer}


def _layer_files(storage: Path, driver: str, layer_id: str) -> Path:
    return (
        storage / "overlay" / layer_id / "diff" if driver == "overlay" else storage / "vfs" / "dir" / layer_id
    )


def _layer_tar(storage: Path, driver: str, layer_id: str) -> Iterator[bytes]:
    """The layer's tar, byte for byte as it was committed."""
    files = _layer_files(storage, driver, layer_id)
    with gzip.open(storage / f"{driver}-layers" / f"{layer_id}.tar-split.gz") as split:
        for line in split:
            entry = json.loads(line)
            if entry["type"] == _TAR_SPLIT_SEGMENT:
                yield base64.b64decode(entry["payload"])
            elif size := entry.get("size", 0):
                raw = base64.b64decode(entry["name_raw"]) if "name_raw" in entry else entry["name"].encode()
                yield from _file_content(files / os.fsdecode(raw).lstrip("/"), size)


def _file_content(path: Path, size: int) -> Iterator[bytes]:
    left = size
    with path.open("rb") as file:
        while left and (chunk := file.read(min(left, _READ_CHUNK))):
            left -= len(chunk)
            yield chunk
    if left:
        raise OciError(f"{path} is {left} bytes shorter than its layer's tar says")
