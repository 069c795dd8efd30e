"""The pod sandbox ("pause") image, made here: no registry is reachable, and containerd needs one
before it can start any pod. A static build of data/pause.c in a one-layer OCI archive, cached by the
source's digest, which `ctr images import` loads under the name containerd's config pins."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from importlib import resources
from pathlib import Path

from labtune_dev.binaries import BinariesError, cache_root

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
_MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def ensure_pause_archive() -> Path:
    """An OCI archive of the pause image (built once per source version)."""
    source = resources.files("labtune_dev").joinpath("data/pause.c").read_bytes()
    out = cache_root() / "images" / f"pause-{hashlib.sha256(source).hexdigest()[:12]}.oci.tar"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    binary = _compile(source, out.parent)
    partial = out.with_name(out.name + ".tmp")
    partial.write_bytes(oci_archive(PAUSE_IMAGE, {"pause": binary.read_bytes()}, ["/pause"]))
    binary.unlink()
    partial.replace(out)
    return out


def _compile(source: bytes, work: Path) -> Path:
    if shutil.which("gcc") is None:
        raise BinariesError("building the pause image needs gcc (Debian: build-essential)")
    src, binary = work / "pause.c", work / "pause"
    src.write_bytes(source)
    result = subprocess.run(
        ["gcc", "-Os", "-static", "-s", "-o", str(binary), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    src.unlink()
    if result.returncode != 0:
        raise BinariesError(
            f"gcc could not build the pause binary (static glibc: libc6-dev):\n{result.stderr}"
        )
    return binary


def oci_archive(name: str, files: dict[str, bytes], entrypoint: list[str]) -> bytes:
    """An OCI image layout (as a tar) holding one image: `files` (executable, at the root) in one
    uncompressed layer, tagged `name` the way `ctr images import` reads it."""
    layer = _tar({path: (data, 0o755) for path, data in files.items()})
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": _MEDIA_MANIFEST,
            "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        }
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **_descriptor(_MEDIA_MANIFEST, manifest),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                },
            }
        ],
    }
    blobs = {
        f"blobs/sha256/{_digest(blob).removeprefix('sha256:')}": blob for blob in (layer, config, manifest)
    }
    return _tar(
        {"oci-layout": (_json({"imageLayoutVersion": "1.0.0"}), 0o644), "index.json": (_json(index), 0o644)}
        | {path: (blob, 0o644) for path, blob in blobs.items()}
    )


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}
