"""The test session's node: its own bridge and pod addresses (a running `make demo` keeps labtune0)."""

from __future__ import annotations

from labtune_dev.node import NodeSettings

NODE = NodeSettings(name="labtune-test-node", bridge="labtunet0", pod_cidr="10.245.0.0/24", gpus=2)
