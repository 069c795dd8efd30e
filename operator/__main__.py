"""`python -m labtune.operator` runs the operator (same options as `labtune operator run`)."""

from __future__ import annotations

from labtune.operator.operator_cli import run

run(prog_name="python -m labtune.operator")
