"""Leader election on a coordination.k8s.io Lease, so that several operator replicas can run and
only one reconciles.

Every replica runs the kubernetes client's leader election (`kubernetes.leaderelection`) on one
thread. A standby only waits: it serves /healthz so that its liveness probe passes, and its
`labtune_operator_leader` gauge reads 0. The replica that takes the Lease starts the operator;
while it leads, it renews the Lease every `retry_period` seconds. Stopped by SIGTERM (a rolling
update, a drain), it gives the Lease up, and a standby takes it at its next try.

A leader that cannot renew within `renew_deadline` (the API server unreachable, its token revoked,
a request that hangs) exits the process at once: nothing it has in flight is finished. Its
`renew_deadline` is shorter than the `lease_duration` a standby waits from the last renewal it saw,
so the old leader has stopped before a standby can take the Lease. Status writes also carry the
resourceVersion they were computed from (a write based on what another replica changed fails
with 409), and children are created under fixed names (a second create is a 409 too)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from labtune.operator.operator_metrics import IS_LEADER, LEADERSHIPS
from labtune.operator.settings import LeaderElectionSettings

log = logging.getLogger(__name__)

LOST_EXIT_CODE = 1
"""The exit status of a replica that lost its Lease (its pod restarts and becomes a standby)."""


class _WatchedLeaseLock(LeaseLock):
    """The client's Lease lock, on the operator's API client, recording each successful write of
    this replica's record (a create or a renewal) for the watchdog."""

    def __init__(self, settings: LeaderElectionSettings, api: client.ApiClient) -> None:
        super().__init__(settings.lease_name, settings.namespace, settings.identity)  # type: ignore[no-untyped-call]
        self.api_instance = client.CoordinationV1Api(api)
        self.renewed = time.monotonic()
        self.released = False
        """Set as the replica gives the Lease up: the election thread must not take it back."""

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        if self.released:
            return False
        return self._noted(super().create(name, namespace, election_record))  # type: ignore[no-untyped-call]

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        if self.released:
            return False
        return self._noted(super().update(name, namespace, updated_record))  # type: ignore[no-untyped-call]

    def release(self) -> None:
        """Gives the Lease up (no holder) if this replica still holds it, so that a standby takes it
        at its next try instead of waiting out the lease: a rolling update hands over in seconds.
        The write carries the Lease's resourceVersion: it fails if another replica wrote since."""
        self.released = True
        try:
            lease = self.api_instance.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            self.api_instance.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            log.warning("leader election: could not give the Lease up (%s %s)", error.status, error.reason)
            return
        log.info("leader election: %s gave the Lease up", self.identity)

    def _noted(self, written: bool) -> bool:
        if written:
            self.renewed = time.monotonic()
        return written


def _stop_leading(reason: str) -> None:
    """Ends the process now, without finishing in-flight work: another replica may lead soon."""
    log.error("leader election: %s; exiting so that another replica can lead", reason)
    logging.shutdown()
    os._exit(LOST_EXIT_CODE)


def _watchdog(lock: _WatchedLeaseLock, settings: LeaderElectionSettings) -> None:
    """The renew loop stops a leader that fails to renew, but not one whose request hangs (a
    dropped connection without a reset): this thread ends the process in both cases."""
    while True:
        time.sleep(0.5)
        silent = time.monotonic() - lock.renewed
        if silent > settings.renew_deadline:
            _stop_leading(
                f"the Lease was not renewed for {silent:.1f}s (deadline {settings.renew_deadline}s)"
            )


class _Standby(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"standby\n"
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds; nothing worth a line


def _standby_health(port: int) -> ThreadingHTTPServer | None:
    """/healthz for a replica that waits for the Lease (the operator's own starts when it leads)."""
    if not port:
        return None
    server = ThreadingHTTPServer(("0.0.0.0", port), _Standby)
    threading.Thread(target=server.serve_forever, name="standby-healthz", daemon=True).start()
    return server


def run_elected(
    settings: LeaderElectionSettings, api: client.ApiClient, liveness_port: int, lead: Callable[[], None]
) -> None:
    """Runs `lead` (the operator, until it stops) in this thread: at once without leader election,
    else once this replica holds the Lease."""
    if not settings.enabled:
        IS_LEADER.set(1)
        lead()
        return
    IS_LEADER.set(0)
    lock = _WatchedLeaseLock(settings, api)
    elected = threading.Event()
    config = electionconfig.Config(  # type: ignore[no-untyped-call]
        lock,
        settings.lease_duration,
        settings.renew_deadline,
        settings.retry_period,
        elected.set,
        lambda: _stop_leading("the Lease could not be renewed"),
    )
    election = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]
    threading.Thread(target=election.run, name="leader-election", daemon=True).start()
    standby = _standby_health(liveness_port)
    log.info(
        "leader election: %s waits for Lease %s/%s",
        settings.identity,
        settings.namespace,
        settings.lease_name,
    )
    elected.wait()
    if standby is not None:
        standby.shutdown()
        standby.server_close()
    threading.Thread(target=_watchdog, args=(lock, settings), name="lease-watchdog", daemon=True).start()
    IS_LEADER.set(1)
    LEADERSHIPS.inc()
    log.info("leader election: %s leads", settings.identity)
    lead()
    # The operator stopped (SIGTERM): kopf's watches are closed, nothing new is reconciled.
    lock.release()
    IS_LEADER.set(0)
