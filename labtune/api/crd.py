"""CustomResourceDefinitions generated from the API models, and the drift check.

pydantic writes JSON Schema (2020-12); the API server wants a structural OpenAPI v3.0 schema: no
$ref, no null branches, no titles, boolean `exclusiveMinimum`, every string and list bounded so
that the CEL cost estimator accepts the rules. This module does that translation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from labtune.api.base import CEL_KEY, GROUP, VERSION
from labtune.api.resource import Resource

CATEGORY = "labtune"
_DROPPED_KEYS = {"title", "additionalProperties", "propertyNames", "$defs"}


class CrdDrift(Exception):
    """The CRD files on disk differ from what the models generate."""


class _K8sJsonSchema(GenerateJsonSchema):
    """Emits defaults of `default_factory` fields too: an object-valued default becomes `{}` so the
    API server applies the nested defaults; empty collections get no default (absent means empty)."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" not in schema:
            default = schema.get("default", NoDefault)
            return NoDefault if default is None else default
        value = schema["default_factory"]()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return {}
        return value if value else NoDefault

    def encode_default(self, dft: Any) -> Any:
        # A null in a default is not structural; unset optional fields are simply left out.
        return _drop_none(super().encode_default(dft))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _structural(node: Any, defs: dict[str, Any], where: str) -> Any:
    """Translates one JSON Schema node (and its children) into a structural OpenAPI v3 schema."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"{where}: unions other than `X | None` have no structural schema")
        node = _merge(branches[0], node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        node = _merge(target, node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "description":
            out[key] = " ".join(value.split())  # docstrings wrap lines; explain re-wraps them
        elif key == "properties":
            out[key] = {name: _structural(sub, defs, f"{where}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs, f"{where}[]")
        else:
            out[key] = value
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"], defs, f"{where}{{}}")
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    _require_bounds(out, where)
    return out


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merges a referencing node's own keys (description, default, CEL rules) over its target."""
    merged = {**base, **{k: v for k, v in overlay.items() if k != CEL_KEY}}
    rules = [*base.get(CEL_KEY, []), *overlay.get(CEL_KEY, [])]
    if rules:
        merged[CEL_KEY] = rules
    return merged


def _require_bounds(schema: dict[str, Any], where: str) -> None:
    # Unbounded strings and lists make the API server's CEL cost estimate exceed its budget.
    if schema.get("type") == "string" and not ({"maxLength", "enum", "format"} & schema.keys()):
        raise ValueError(f"{where}: string without max_length (needed to bound CEL cost)")
    if schema.get("type") == "array" and "maxItems" not in schema:
        raise ValueError(f"{where}: list without max_length (needed to bound CEL cost)")


def _immutability_rule(kind: type[Resource], spec_schema: dict[str, Any]) -> dict[str, str]:
    """A transition rule at the root: once status.startTime is set, every spec field but the
    mutable ones must equal its old value (CEL cannot drop a field, so each is compared)."""
    mutable = kind.mutable_after_start or frozenset()
    required = set(spec_schema.get("required", []))
    clauses = []
    for name in sorted(spec_schema["properties"]):
        if name in mutable:
            continue
        new, old = f"self.spec.{name}", f"oldSelf.spec.{name}"
        if name in required:
            clauses.append(f"{new} == {old}")
        else:
            clauses.append(f"(has({new}) ? (has({old}) && {new} == {old}) : !has({old}))")
    allowed = ", ".join(f"spec.{m}" for m in sorted(mutable)) or "nothing"
    return {
        "rule": "!has(oldSelf.status) || !has(oldSelf.status.startTime) || (" + " && ".join(clauses) + ")",
        "message": f"spec is immutable once the {kind.kind_name()} has started (status.startTime is set); "
        f"only {allowed} may change: create a new {kind.kind_name()} instead",
        "reason": "FieldValueForbidden",
    }


def openapi_schema(kind: type[Resource]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one kind."""
    raw = kind.model_json_schema(by_alias=True, mode="validation", schema_generator=_K8sJsonSchema)
    defs = raw.get("$defs", {})
    props = raw["properties"]
    spec = _structural(props["spec"], defs, "spec")
    status = _structural(props["status"], defs, "status")
    spec.pop("default", None)
    status.pop("default", None)
    schema: dict[str, Any] = {
        "type": "object",
        "description": raw.get("description", ""),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "labtune.io/v1alpha1"},
            "kind": {"type": "string", "description": kind.kind_name()},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    rules = [_immutable_rule(name) for name in sorted(kind.immutable)]
    if kind.mutable_after_start is not None:
        rules.append(_immutability_rule(kind, spec))
    if rules:
        schema[CEL_KEY] = rules
    return schema


def _immutable_rule(name: str) -> dict[str, str]:
    """A transition rule: the field keeps its value, and stays set or unset, from creation on."""
    new, old = f"self.spec.{name}", f"oldSelf.spec.{name}"
    return {
        "rule": f"has({new}) == has({old}) && (!has({new}) || {new} == {old})",
        "message": f"spec.{name} is immutable: it may be set only when the resource is created",
        "reason": "FieldValueForbidden",
    }


def build_crd(kind: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    name = kind.kind_name()
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"priority": c.priority} if c.priority else {}),
            **({"description": c.description} if c.description else {}),
        }
        for c in kind.printer_columns
    ]
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": name,
                "listKind": f"{name}List",
                "plural": kind.plural,
                "singular": name.lower(),
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def render(crd: dict[str, Any]) -> str:
    """YAML text of a CRD, stable from run to run."""
    header = "# Generated by `labtune crds generate` from labtune/api; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=110, allow_unicode=True)


def crd_files(kinds: Iterable[type[Resource]]) -> dict[str, str]:
    """File name -> YAML text for each kind."""
    return {f"{k.plural}.{GROUP}.yaml": render(build_crd(k)) for k in kinds}


def write(kinds: Iterable[type[Resource]], folders: Iterable[Path]) -> list[Path]:
    """Writes the CRDs into each folder, removing stale generated files; returns the paths written."""
    files = crd_files(kinds)
    written = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in set(p.name for p in folder.glob(f"*.{GROUP}.yaml")) - files.keys():
            (folder / stale).unlink()
        for name, text in files.items():
            path = folder / name
            path.write_text(text)
            written.append(path)
    return written


def check(kinds: Iterable[type[Resource]], folders: Iterable[Path]) -> None:
    """Raises CrdDrift naming every file that is missing, stale or different from the models."""
    files = crd_files(kinds)
    problems = []
    for folder in folders:
        present = {p.name for p in folder.glob(f"*.{GROUP}.yaml")}
        problems += [f"{folder / n}: not generated by the models" for n in sorted(present - files.keys())]
        for name, text in files.items():
            path = folder / name
            if not path.exists():
                problems.append(f"{path}: missing")
            elif path.read_text() != text:
                problems.append(f"{path}: differs from the models")
    if problems:
        raise CrdDrift("CRDs out of date (run `labtune crds generate`):\n  " + "\n  ".join(problems))
