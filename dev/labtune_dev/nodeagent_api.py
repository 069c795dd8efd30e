"""The node agent's view of the API server: plain JSON dicts through the kubernetes client (its
generated models add nothing here and lose unknown fields)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

Json = dict[str, Any]


class NotFound(LookupError):
    """The object does not exist (yet)."""


def _data(response: Any) -> Json:
    loaded: Json = json.loads(response.data)
    return loaded


class NodeApi:
    """The calls a kubelet makes, with the agent's credentials."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    def _read(self, method: Any, *args: Any) -> Json:
        try:
            return _data(method(*args, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"{method.__name__.removeprefix('read_namespaced_')} {args[0]}") from None
            raise

    def config_map(self, namespace: str, name: str) -> Json:
        return self._read(self.core.read_namespaced_config_map, name, namespace)

    def secret(self, namespace: str, name: str) -> Json:
        return self._read(self.core.read_namespaced_secret, name, namespace)

    def claim(self, namespace: str, name: str) -> Json:
        return self._read(self.core.read_namespaced_persistent_volume_claim, name, namespace)

    def volume(self, name: str) -> Json:
        return self._read(self.core.read_persistent_volume, name)

    def token(self, pod: Json, audience: str | None, seconds: int) -> str:
        """A ServiceAccount token bound to the pod, as the kubelet requests for projected volumes."""
        meta = pod["metadata"]
        spec: Json = {
            "expirationSeconds": seconds,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]},
        }
        if audience:
            spec["audiences"] = [audience]
        account = pod["spec"].get("serviceAccountName") or "default"
        request: Any = {"spec": spec}
        response = self.core.create_namespaced_service_account_token(
            account, meta["namespace"], request, _preload_content=False
        )
        token: str = _data(response)["status"]["token"]
        return token

    def pods(self, node: str) -> tuple[list[Json], str]:
        """Pods bound to `node` and the list's resourceVersion."""
        listed = _data(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", _preload_content=False
            )
        )
        return listed["items"], listed["metadata"]["resourceVersion"]

    def watch_pods(self, node: str, resource_version: str, seconds: int) -> Iterator[tuple[str, Json]]:
        """(type, pod) events after `resource_version`; ends after `seconds` (then re-list)."""
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            resource_version=resource_version,
            timeout_seconds=seconds,
            allow_watch_bookmarks=False,
        )
        for event in stream:
            yield event["type"], event["raw_object"]

    def patch_pod_status(self, pod: Json, status: Json) -> None:
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile: nothing left to report to
                raise

    def delete_pod(self, pod: Json) -> None:
        """The kubelet's final delete: grace 0, only this incarnation of the name."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=body)  # type: ignore[arg-type]
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def ensure_node(self, node: Json) -> None:
        try:
            self.core.create_node(node)  # type: ignore[arg-type]
        except ApiException as error:
            if error.status != 409:
                raise
            patch = {"metadata": node["metadata"], "spec": node["spec"]}
            self.core.patch_node(node["metadata"]["name"], patch)

    def patch_node_status(self, name: str, status: Json) -> None:
        self.core.patch_node_status(name, {"status": status})

    def delete_node(self, name: str) -> None:
        try:
            self.core.delete_node(name)
        except ApiException as error:
            if error.status != 404:
                raise

    def renew_lease(self, name: str, now: str, seconds: int) -> None:
        """The node's heartbeat Lease in kube-node-lease (created on the first renewal).

        Created without renewTime: the client's model for create turns that MicroTime string
        into a datetime it serializes in a format the API server refuses; a patch passes it as is.
        """
        spec = {"holderIdentity": name, "leaseDurationSeconds": seconds}
        try:
            self.coordination.patch_namespaced_lease(
                name, "kube-node-lease", {"spec": {**spec, "renewTime": now}}
            )
        except ApiException as error:
            if error.status != 404:
                raise
            lease = {"metadata": {"name": name}, "spec": spec}
            self.coordination.create_namespaced_lease("kube-node-lease", lease)  # type: ignore[arg-type]
            self.coordination.patch_namespaced_lease(name, "kube-node-lease", {"spec": {"renewTime": now}})
