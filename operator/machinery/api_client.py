"""The few Kubernetes API calls the reconcilers make, on plain dicts, with create-or-adopt semantics
so that a handler run twice creates nothing new.

Requests go through the kubernetes client's ApiClient (kubeconfig, in-cluster config, token
refresh, TLS, connection pool) but not through its typed API classes: importing CoreV1Api alone
costs the process about 80 MB, and each typed call validates its arguments with pydantic — both
for objects these calls only pass through as dicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from labtune.api import GROUP, KINDS, VERSION
from labtune.api.resource import Resource

MERGE_PATCH = "application/merge-patch+json"
KUEUE_WORKLOADS = "/apis/kueue.x-k8s.io/v1beta2"
"""Kueue's Workload API, its storage version since v0.15 (v1beta1 is served without conversion)."""
REQUEST_TIMEOUT_S = 60
# kind -> (API path prefix, plural) of the built-in objects the operator touches
BUILTIN = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "Job": ("/apis/batch/v1", "jobs"),
}


def api_client(kubeconfig: str | None, pool_size: int) -> client.ApiClient:
    """An API client from a kubeconfig, in-cluster config, or $KUBECONFIG, in that order."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # One connection per handler thread plus the Event poster and the resync thread: a pool smaller
    # than its users discards connections and pays a TLS handshake for each new one.
    configuration.connection_pool_maxsize = pool_size + 2
    return client.ApiClient(configuration)


def _items(lists: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The items of one or more lists, and the oldest list's resourceVersion."""
    items = [item for found in lists for item in found["items"]]
    versions = [str(found["metadata"].get("resourceVersion") or "") for found in lists]
    return items, min(versions, key=lambda v: int(v) if v.isdigit() else 0)


def _labels(selector: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in selector.items())


LABTUNE_KINDS = {kind.kind_name(): kind for kind in KINDS}


def _path(kind: str, namespace: str | None, name: str | None = None) -> str:
    if kind in LABTUNE_KINDS:  # a LabPipeline's runs
        return _custom_path(LABTUNE_KINDS[kind], namespace, name)
    prefix, plural = BUILTIN[kind]
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{prefix}{where}/{plural}" + (f"/{name}" if name else "")


def _custom_path(kind: type[Resource], namespace: str | None, name: str | None = None) -> str:
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"/apis/{GROUP}/{VERSION}{where}/{kind.plural}" + (f"/{name}" if name else "")


class Kube:
    """API calls returning dicts as the API server sent them; non-2xx answers raise ApiException."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT_S)
        data = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        found: dict[str, Any] = json.loads(data)
        return found

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _list(self, path: str, selector: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self.request("GET", path, query={"labelSelector": _labels(selector)} if selector else None)

    # --- labtune.io resources --------------------------------------------------------------

    def get_resource(self, kind: type[Resource], namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(_custom_path(kind, namespace, name))

    def list_resources(
        self, kind: type[Resource], namespaces: tuple[str, ...] = ()
    ) -> tuple[list[dict[str, Any]], str]:
        """Every resource of a kind in the namespaces (all when empty), and the list's resourceVersion."""
        return _items([self._list(_custom_path(kind, ns)) for ns in namespaces or (None,)])

    def list_resources_in(
        self, kind: type[Resource], namespace: str, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """The resources of a kind in one namespace that carry these labels."""
        items: list[dict[str, Any]] = self._list(_custom_path(kind, namespace), selector)["items"]
        return items

    def delete_resource(self, kind: type[Resource], namespace: str, name: str) -> None:
        """Deletes the resource (its children go by garbage collection); gone already is fine."""
        try:
            self.request("DELETE", _custom_path(kind, namespace, name), {"propagationPolicy": "Background"})
        except ApiException as error:
            if error.status != 404:
                raise

    def patch_status(
        self,
        kind: type[Resource],
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch of status; returns the resource as written. With a resourceVersion the
        write fails with 409 Conflict when the resource changed since (optimistic concurrency);
        without one it cannot conflict (fields only this writer owns)."""
        patch: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        path = _custom_path(kind, namespace, name) + "/status"
        return self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    # --- children ----------------------------------------------------------------------------

    def ensure(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Creates the object, or returns the existing one of that name; True when created."""
        namespace, name, kind = body["metadata"]["namespace"], body["metadata"]["name"], body["kind"]
        try:
            return self.request("POST", _path(kind, namespace), body), True
        except ApiException as error:
            if error.status != 409:
                raise
        return self.request("GET", _path(kind, namespace, name)), False

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get_or_none(_path("Job", namespace, name))

    def list_jobs(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._list(_path("Job", namespace), selector)["items"]
        return items

    def list_all_jobs(
        self, selector: Mapping[str, str], namespaces: tuple[str, ...] = ()
    ) -> tuple[list[dict[str, Any]], str]:
        """Jobs with these labels in the namespaces (all when empty), and the list's resourceVersion."""
        return _items([self._list(_path("Job", ns), selector) for ns in namespaces or (None,)])

    def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        self.request(
            "PATCH", _path("Job", namespace, name), {"spec": {"suspend": suspend}}, content_type=MERGE_PATCH
        )

    def job_workload(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        """The Kueue Workload of a Job (the one it owns), or None: none yet, or Kueue's API is not
        served (Kueue is not installed)."""
        try:
            items: list[dict[str, Any]] = self.request(
                "GET", f"{KUEUE_WORKLOADS}/namespaces/{namespace}/workloads"
            )["items"]
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        owned = [
            w
            for w in items
            if any(o.get("uid") == job_uid for o in w["metadata"].get("ownerReferences") or [])
        ]
        return owned[0] if owned else None

    def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        """Kueue's own switch for a queued Job: inactive, Kueue evicts and suspends it."""
        path = f"{KUEUE_WORKLOADS}/namespaces/{namespace}/workloads/{name}"
        self.request("PATCH", path, {"spec": {"active": active}}, content_type=MERGE_PATCH)

    def list_pods(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._list(_path("Pod", namespace), selector)["items"]
        return items

    def list_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """The core Events about one object (kubelet reports a volume it cannot mount only there)."""
        query = {"fieldSelector": f"involvedObject.kind={kind},involvedObject.name={name}"}
        items: list[dict[str, Any]] = self.request("GET", _path("Event", namespace), query=query)["items"]
        return items

    def create_event(self, event: Mapping[str, Any]) -> None:
        self.request("POST", _path("Event", event["metadata"]["namespace"]), event)
