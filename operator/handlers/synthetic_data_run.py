"""kopf handlers of SyntheticDataRun: the shared run handlers (handlers/runs.py); it waits for its
Taxonomy."""

from __future__ import annotations

import kopf

from labtune.api import Taxonomy
from labtune.operator.handlers.runs import register_run
from labtune.operator.settings import OperatorSettings
from labtune.operator.synthetic_data_run import SyntheticDataRunKind, progress_status

KIND = SyntheticDataRunKind()


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    register_run(registry, settings, KIND, progress_status, waits_for=Taxonomy)
