"""Reading back the image layouts labtune_dev.oci writes (what `ctr images import` reads first)."""

from __future__ import annotations

import io
import json
import tarfile
from typing import IO

from labtune_dev.oci import OciImage


def layout_bytes(image: OciImage) -> bytes:
    """The image's whole layout, in memory (small images only)."""
    buffer = io.BytesIO()
    image.write_layout(buffer)
    return buffer.getvalue()


def layout_index(layout: IO[bytes]) -> tuple[str, str]:
    """The image name and manifest digest the layout's index.json names."""
    with tarfile.open(fileobj=layout) as tar:
        member = tar.extractfile("index.json")
        assert member is not None, "not an OCI image layout: no index.json"
        (manifest,) = json.load(member)["manifests"]
    return manifest["annotations"]["io.containerd.image.name"], manifest["digest"]
