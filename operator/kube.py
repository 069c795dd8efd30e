"""The few Kubernetes API calls the reconcilers make, on plain dicts (no model round trips), with
create-or-adopt semantics so that a handler run twice creates nothing new."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from labtune.api import GROUP, VERSION
from labtune.api.resource import Resource


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
    configuration.connection_pool_maxsize = pool_size  # one connection per handler thread
    return client.ApiClient(configuration)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def _labels(selector: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in selector.items())


class Kube:
    """Typed-API calls returning dicts as the API server sent them."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    # --- labtune.io resources --------------------------------------------------------------

    def get_resource(self, kind: type[Resource], namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def list_resources(self, kind: type[Resource], namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace:
            found = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)
        else:
            found = self.custom.list_cluster_custom_object(GROUP, VERSION, kind.plural)
        return cast(list[dict[str, Any]], cast(dict[str, Any], found)["items"])

    def patch_status(
        self, kind: type[Resource], namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """A JSON merge patch of status (no resourceVersion: a concurrent writer cannot make it fail
        with a conflict; every writer computes the whole status from what exists)."""
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, kind.plural, name, {"status": dict(status)}
        )

    # --- children ----------------------------------------------------------------------------

    def ensure(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Creates the object, or returns the existing one of that name; True when created."""
        namespace, name, kind = body["metadata"]["namespace"], body["metadata"]["name"], body["kind"]
        calls: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
            "ConfigMap": (self.core.create_namespaced_config_map, self.core.read_namespaced_config_map),
            "Service": (self.core.create_namespaced_service, self.core.read_namespaced_service),
            "Job": (self.batch.create_namespaced_job, self.batch.read_namespaced_job),
        }
        create, read = calls[kind]
        try:
            return _json(create(namespace, body, _preload_content=False)), True
        except ApiException as error:
            if error.status != 409:
                raise
        return _json(read(name, namespace, _preload_content=False)), False

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list_jobs(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        found = self.batch.list_namespaced_job(
            namespace, label_selector=_labels(selector), _preload_content=False
        )
        items: list[dict[str, Any]] = _json(found)["items"]
        return items

    def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}})

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    def list_pods(self, namespace: str, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        found = self.core.list_namespaced_pod(
            namespace, label_selector=_labels(selector), _preload_content=False
        )
        items: list[dict[str, Any]] = _json(found)["items"]
        return items
