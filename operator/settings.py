"""Operator settings: images, artifact storage, ports and intervals (from `labtune operator run`
options or their LABTUNE_* environment variables)."""

from __future__ import annotations

import socket
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labtune import __version__
from labtune.contract.generate import DEFAULT_LEAF_CACHE_BYTES


class LeaderElectionSettings(BaseModel):
    """The Lease and its timing, in seconds.

    Kubernetes' own controllers use 15, 10 and 2; a standby can only count the lease duration from
    when it last saw the Lease change, so a crashed leader is replaced 1 to 2 s after the lease
    duration (15.9 to 16.5 s measured with 15). 12 and 8 keep that under 15 s, still tolerate an
    8 s API-server stall, and leave 4 s between an old leader's exit and a new one's start."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    lease_name: str = "labtune-operator"
    namespace: str = "labtune-system"
    identity: str = Field(default_factory=lambda: f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")
    """Unique per process: the host (pod) name and a random part, so that a restarted container waits
    for the Lease its previous process held rather than taking it as its own."""
    lease_duration: int = Field(default=12, ge=2)
    renew_deadline: int = Field(default=8, ge=1)
    retry_period: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _check_timing(self) -> LeaderElectionSettings:
        # The client's own checks (it calls sys.exit on a violation), made readable here.
        if not (1.2 * self.retry_period < self.renew_deadline < self.lease_duration):
            raise ValueError(
                "leader election needs 1.2 x retry period < renew deadline < lease duration, got "
                f"{self.retry_period}, {self.renew_deadline} and {self.lease_duration} seconds"
            )
        return self


class OperatorSettings(BaseModel):
    """How the operator runs and what it puts into the pods it creates."""

    model_config = ConfigDict(frozen=True)

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; every namespace when empty."""
    kubeconfig: str | None = None
    """Kubeconfig to use; in-cluster config (or $KUBECONFIG) when unset."""
    generator_image: str = f"ghcr.io/labtune/generator:{__version__}"
    trainer_image: str = f"ghcr.io/labtune/trainer:{__version__}"
    vllm_image: str = "docker.io/vllm/vllm-openai:v0.11.0"
    image_pull_policy: str = "IfNotPresent"
    artifact_claim: str = "labtune-artifacts"
    """PersistentVolumeClaim (in the resource's namespace) for outputs whose URI the spec leaves unset."""
    artifact_root: str = "/artifacts"
    """Where claims are mounted in job pods: claim C at <artifact_root>/C."""
    job_service_account: str | None = None
    """ServiceAccount of job pods (they need no API access; the namespace default when unset)."""
    job_metrics_port: Annotated[int, Field(ge=1, le=65535)] = 9090
    """Port job pods serve /metrics on; the operator reads progress from it."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """Port of the operator's own /metrics; 0 disables it."""
    liveness_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    """Port of the operator's /healthz; 0 disables it."""
    scrape_interval: Annotated[float, Field(gt=0)] = 30.0
    """Seconds between reads of running pods' /metrics into status."""
    resync_interval: Annotated[float, Field(gt=0)] = 60.0
    """Seconds between level-triggered re-reconciliations of every resource."""
    workers: Annotated[int, Field(ge=1, le=256)] = 16
    """Reconciliation worker threads (each runs one reconciliation at a time)."""
    leaf_cache_max_bytes: Annotated[int, Field(ge=0)] = DEFAULT_LEAF_CACHE_BYTES
    """Size bound of the SyntheticDataRun leaf cache on each artifact claim (`labtune-cache/leaves`)."""
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    """Several replicas, one reconciling: off by default (one replica); the chart turns it on."""
