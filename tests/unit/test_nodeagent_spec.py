"""The node agent's pure translation of a pod spec: $(VAR) expansion, the downward API, and
ConfigMap/Secret keys as files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from labtune.devcluster.nodeagent_exec import Mount
from labtune.devcluster.nodeagent_pod import PROJECT_ROOT, environment_mounts
from labtune.devcluster.nodeagent_spec import VolumeError, _field, _object_files, expand

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"b": "2", "a": "1"}},
    "spec": {"nodeName": "node-1"},
    "status": {"podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}]},
}


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("$(A)-$(B)", "one-two"),
        ("$$(A)", "$(A)"),  # escaped: a literal reference
        ("$(MISSING) stays", "$(MISSING) stays"),
        ("$$$$", "$$"),
        ("cost: $5", "cost: $5"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expanded: str) -> None:
    assert expand(text, {"A": "one", "B": "two"}) == expanded


def test_downward_api_fields() -> None:
    assert _field(POD, "metadata.name") == "p"
    assert _field(POD, "metadata.labels['a']") == "1"
    assert _field(POD, "metadata.labels") == 'a="1"\nb="2"'
    assert _field(POD, "spec.nodeName") == "node-1"
    assert _field(POD, "status.podIP") == "10.244.0.7"
    with pytest.raises(VolumeError, match="unsupported"):
        _field(POD, "spec.containers")


def test_object_files_decode_secrets_and_apply_items() -> None:
    secret = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": base64.b64encode(b"v").decode()}}
    assert _object_files(secret, None) == {"k": b"v"}
    config_map = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "x", "b": "y"}}
    assert _object_files(config_map, [{"key": "b", "path": "dir/b.txt"}]) == {"dir/b.txt": b"y"}
    with pytest.raises(VolumeError, match="has no key z"):
        _object_files(config_map, [{"key": "z", "path": "z"}])


def test_the_environment_is_mounted_back_where_a_volume_would_hide_it(tmp_path: Path) -> None:
    hidden = [Mount(source=str(tmp_path), target=str(PROJECT_ROOT.parent))]
    assert Mount(source=str(PROJECT_ROOT), target=str(PROJECT_ROOT), read_only=True) in (
        environment_mounts(hidden)
    )
    elsewhere = [Mount(source=str(tmp_path), target="/nonexistent-volume")]
    assert environment_mounts(elsewhere) == []
