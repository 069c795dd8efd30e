"""The pod contract: the one config file the operator hands each job pod, the summary the pod
writes to its termination log, and the exit codes both sides agree on.

The generator and trainer images read only their config file and environment, so each can run
by hand with no cluster (`labtune generate --config …`, `labtune train --config …`).
"""

from __future__ import annotations

from labtune.contract.common import (
    CONTRACT_VERSION,
    EXIT_CONFIG_ERROR,
    EXIT_FAILED,
    EXIT_PREEMPTED,
    SUMMARY_LIMIT_BYTES,
    ConfigError,
    ContractModel,
    PodConfig,
    load_config,
    resolve_artifact,
    write_summary,
)

__all__ = [
    "CONTRACT_VERSION",
    "EXIT_CONFIG_ERROR",
    "EXIT_FAILED",
    "EXIT_PREEMPTED",
    "SUMMARY_LIMIT_BYTES",
    "ConfigError",
    "ContractModel",
    "PodConfig",
    "load_config",
    "resolve_artifact",
    "write_summary",
]
