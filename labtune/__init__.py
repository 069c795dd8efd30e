"""labtune: the LAB method (taxonomy curation, synthetic data generation, phased tuning) on Kubernetes."""

from __future__ import annotations

__version__ = "0.1.0"
