"""Kubernetes Events for the transitions a person wants to see, posted from a background thread
so that a reconciliation never waits for them (and any thread may record one, not only kopf's
handler contexts)."""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from labtune.operator.machinery.api_client import Kube

log = logging.getLogger(__name__)
COMPONENT = "labtune-operator"
MESSAGE_LIMIT = 1024
INSTANCE = socket.gethostname()[:128]  # the operator's pod name in a cluster


def build_event(
    body: Mapping[str, Any], type_: str, reason: str, message: str, at: datetime
) -> dict[str, Any]:
    """A core/v1 Event. `eventTime` has microseconds: two transitions in one second (`firstTimestamp`
    has whole seconds) still sort in the order they happened in `kubectl events`."""
    timestamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": type_,
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "action": reason,
        "reportingInstance": INSTANCE,
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


class Recorder:
    """Queues Events and posts them one by one; a failed post is logged, never retried (an Event
    is a courtesy, the status is the record)."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        threading.Thread(target=self._post_forever, name="events", daemon=True).start()

    def record(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self._queue.put(build_event(body, type_, reason, message, datetime.now(UTC)))

    def _post_forever(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._kube.create_event(event)
            except (ApiException, OSError) as error:
                log.warning(
                    "Event %s for %s not posted: %s", event["reason"], event["involvedObject"]["name"], error
                )
