"""A node agent for tests: its own Node name, bridge and pod CIDR, so that it never meets the demo's
or another test session's pods on this machine."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from labtune.devcluster.nodeagent import NodeAgent, NodeAgentError, NodeAgentSettings


@contextmanager
def node_agent(kubeconfig: Path, data_root: Path, **settings: object) -> Iterator[NodeAgent]:
    suffix = uuid.uuid4().hex[:6]
    try:
        agent = NodeAgent(
            NodeAgentSettings(
                kubeconfig=kubeconfig,
                node_name=f"agent-{suffix}",
                data_root=data_root,
                bridge=f"ltt{suffix}",
                pod_cidr=f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24",
                **settings,  # type: ignore[arg-type]
            )
        )
    except NodeAgentError as error:
        pytest.skip(str(error))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
