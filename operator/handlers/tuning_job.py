"""kopf handlers of TuningJob: the shared run handlers (handlers/runs.py); it waits for its
SyntheticDataRun."""

from __future__ import annotations

import kopf

from labtune.api import SyntheticDataRun
from labtune.operator.handlers.runs import register_run
from labtune.operator.settings import OperatorSettings
from labtune.operator.tuning_job import TuningJobKind, progress_status

KIND = TuningJobKind()


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    register_run(registry, settings, KIND, progress_status, waits_for=SyntheticDataRun)
