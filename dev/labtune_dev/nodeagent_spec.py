"""What the node agent makes of a pod spec on the host: volumes as host folders, each container's
mounts and its environment, as the kubelet would (files from ConfigMaps, Secrets, the downward API
and ServiceAccount tokens; emptyDir folders; PersistentVolumeClaims through their bound volume).

PersistentVolumeClaims: a claim bound to a `hostPath` or `local` PersistentVolume is that host
folder (created when missing); any other claim gets `<data root>/claims/<namespace>/<claim>`.
emptyDir with `medium: Memory` lives under /dev/shm (memory-backed; sizeLimit is not enforced).
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from labtune.devcluster.nodeagent_api import Json, NodeApi, NotFound
from labtune.devcluster.nodeagent_exec import Mount

DEFAULT_MODE = 0o644
TOKEN_SECONDS = 3600
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class VolumeError(RuntimeError):
    """A volume cannot be set up yet (missing ConfigMap, unbound claim…): the kubelet retries."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, `$$` is a literal `$`, and an
    undefined reference stays as it is."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, text)


def _write_files(folder: Path, files: Mapping[str, bytes], mode: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)


def _object_files(obj: Json, items: list[Json] | None) -> dict[str, bytes]:
    """Keys of a ConfigMap or Secret as file contents (Secret data is base64), `items` applied."""
    secret = obj.get("kind") == "Secret"
    data: dict[str, bytes] = {
        key: base64.b64decode(value) if secret else value.encode()
        for key, value in (obj.get("data") or {}).items()
    }
    data.update({key: base64.b64decode(value) for key, value in (obj.get("binaryData") or {}).items()})
    if not items:
        return data
    missing = [item["key"] for item in items if item["key"] not in data]
    if missing:
        raise VolumeError(f"{obj['kind']} {obj['metadata']['name']} has no key {missing[0]}")
    return {item["path"]: data[item["key"]] for item in items}


def _pairs(mapping: Mapping[str, str] | None) -> str:
    """Labels or annotations as the downward API writes them: key="value" lines."""
    return "\n".join(f'{key}="{value}"' for key, value in sorted((mapping or {}).items()))


def _field(pod: Json, path: str) -> str:
    """A downward API fieldRef (metadata.name, metadata.labels['x'], status.podIP, …)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    fields: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta["name"],
        "metadata.namespace": lambda: meta["namespace"],
        "metadata.uid": lambda: meta["uid"],
        "metadata.labels": lambda: _pairs(meta.get("labels")),
        "metadata.annotations": lambda: _pairs(meta.get("annotations")),
        "spec.nodeName": lambda: spec.get("nodeName", ""),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
        "status.hostIP": lambda: status.get("hostIP", ""),
        "status.podIP": lambda: status.get("podIP", ""),
        "status.podIPs": lambda: ",".join(entry["ip"] for entry in status.get("podIPs") or []),
    }
    if path not in fields:
        raise VolumeError(f"unsupported downward API field {path}")
    return str(fields[path]())


class VolumeBuilder:
    """Realizes one pod's volumes under `pod_dir/volumes`; returns {volume name: host path}."""

    def __init__(self, api: NodeApi, pod: Json, pod_dir: Path, data_root: Path) -> None:
        self.api, self.pod, self.pod_dir, self.data_root = api, pod, pod_dir, data_root
        self.namespace: str = pod["metadata"]["namespace"]

    @property
    def shm_root(self) -> Path:
        return Path("/dev/shm") / f"labtune-{self.pod['metadata']['uid']}"

    def build(self) -> dict[str, Path]:
        return {volume["name"]: self._volume(volume) for volume in self.pod["spec"].get("volumes") or []}

    def remove(self) -> None:
        shutil.rmtree(self.shm_root, ignore_errors=True)

    def _volume(self, volume: Json) -> Path:
        name: str = volume["name"]
        folder = self.pod_dir / "volumes" / name
        if "emptyDir" in volume:
            memory = (volume["emptyDir"] or {}).get("medium") == "Memory"
            path = self.shm_root / name if memory else folder
            path.mkdir(parents=True, exist_ok=True)
            return path
        if "configMap" in volume or "secret" in volume:
            self._files(folder, volume.get("configMap") or volume["secret"], "secret" in volume)
            return folder
        if "projected" in volume:
            for source in volume["projected"]["sources"]:
                self._projected(folder, source, volume["projected"].get("defaultMode", DEFAULT_MODE))
            return folder
        if "downwardAPI" in volume:
            self._downward(folder, volume["downwardAPI"]["items"], volume["downwardAPI"].get("defaultMode"))
            return folder
        if "persistentVolumeClaim" in volume:
            return self._claim(volume["persistentVolumeClaim"]["claimName"])
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])
        kind = next(iter(k for k in volume if k != "name"), "?")
        raise VolumeError(f"volume {volume['name']}: {kind} volumes are not supported by the node agent")

    def _files(self, folder: Path, source: Json, secret: bool) -> None:
        name = source.get("secretName") if secret else source.get("name")
        try:
            obj = (self.api.secret if secret else self.api.config_map)(self.namespace, str(name))
        except NotFound as error:
            if source.get("optional"):
                folder.mkdir(parents=True, exist_ok=True)
                return
            raise VolumeError(f"{'Secret' if secret else 'ConfigMap'} {name} not found") from error
        obj.setdefault("kind", "Secret" if secret else "ConfigMap")
        _write_files(folder, _object_files(obj, source.get("items")), source.get("defaultMode", DEFAULT_MODE))

    def _projected(self, folder: Path, source: Json, mode: int) -> None:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            seconds = token.get("expirationSeconds", TOKEN_SECONDS)
            value = self.api.token(self.pod, token.get("audience"), seconds)
            _write_files(folder, {token["path"]: value.encode()}, mode)
        elif "configMap" in source or "secret" in source:
            self._files(folder, {"defaultMode": mode, **(source.get("configMap") or source["secret"])},
                        "secret" in source)  # fmt: skip
        elif "downwardAPI" in source:
            self._downward(folder, source["downwardAPI"]["items"], mode)

    def _downward(self, folder: Path, items: list[Json], mode: int | None) -> None:
        files = {item["path"]: _field(self.pod, item["fieldRef"]["fieldPath"]).encode() for item in items}
        _write_files(folder, files, mode or DEFAULT_MODE)

    def _claim(self, claim_name: str) -> Path:
        try:
            claim = self.api.claim(self.namespace, claim_name)
        except NotFound as error:
            raise VolumeError(f"PersistentVolumeClaim {claim_name} not found") from error
        volume_name = (claim.get("spec") or {}).get("volumeName")
        path = self.data_root / "claims" / self.namespace / claim_name
        if volume_name:
            spec = self.api.volume(volume_name).get("spec") or {}
            source = spec.get("hostPath") or spec.get("local")
            path = Path(source["path"]) if source else path
        path.mkdir(parents=True, exist_ok=True)
        return path


def container_mounts(container: Json, volumes: Mapping[str, Path]) -> list[Mount]:
    """The container's volumeMounts as host bind mounts (subPath resolved inside the volume)."""
    mounts = []
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]]
        if sub := mount.get("subPath"):
            source = source / sub
            if not source.exists():
                source.mkdir(parents=True)
        mounts.append(
            Mount(source=str(source), target=mount["mountPath"], read_only=bool(mount.get("readOnly")))
        )
    return mounts


class EnvBuilder:
    """A container's environment: the project environment's PATH, then envFrom, then env, each
    value expanded against what was defined before it."""

    def __init__(self, api: NodeApi, pod: Json, bin_dir: Path) -> None:
        self.api, self.pod, self.bin_dir = api, pod, bin_dir
        self.namespace: str = pod["metadata"]["namespace"]

    def build(self, container: Json) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin_dir}:{SYSTEM_PATH}",
            "HOSTNAME": self.pod["spec"].get("hostname") or self.pod["metadata"]["name"],
        }
        for source in container.get("envFrom") or []:
            env.update(self._env_from(source))
        for var in container.get("env") or []:
            value = self._value_from(var["valueFrom"]) if "valueFrom" in var else var.get("value", "")
            if value is not None:
                env[var["name"]] = expand(value, env) if "valueFrom" not in var else value
        return env

    def _env_from(self, source: Json) -> dict[str, str]:
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        try:
            read = self.api.secret if "secretRef" in source else self.api.config_map
            obj = read(self.namespace, ref["name"])
        except NotFound as error:
            if ref.get("optional"):
                return {}
            raise VolumeError(f"envFrom: {ref['name']} not found") from error
        obj.setdefault("kind", "Secret" if "secretRef" in source else "ConfigMap")
        prefix = source.get("prefix", "")
        return {prefix + key: value.decode() for key, value in _object_files(obj, None).items()}

    def _value_from(self, source: Json) -> str | None:
        if "fieldRef" in source:
            return _field(self.pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return self._resource(source["resourceFieldRef"])
        ref = source.get("secretKeyRef") or source["configMapKeyRef"]
        try:
            read = self.api.secret if "secretKeyRef" in source else self.api.config_map
            obj = read(self.namespace, ref["name"])
            obj.setdefault("kind", "Secret" if "secretKeyRef" in source else "ConfigMap")
            return _object_files(obj, None)[ref["key"]].decode()
        except (NotFound, KeyError) as error:
            if ref.get("optional"):
                return None
            raise VolumeError(f"{ref['name']}/{ref['key']} not found") from error

    def _resource(self, ref: Json) -> str:
        """limits.cpu / requests.memory …: the container's value, or empty when it sets none."""
        container = next(
            (c for c in self.pod["spec"]["containers"] if c["name"] == ref.get("containerName")),
            self.pod["spec"]["containers"][0],
        )
        kind, _, resource = ref["resource"].partition(".")
        return str(((container.get("resources") or {}).get(kind) or {}).get(resource, ""))
