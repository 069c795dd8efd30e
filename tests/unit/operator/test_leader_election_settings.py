"""The leader election's settings: the timing rules the election client enforces with sys.exit are
a readable error at the command line instead."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from labtune.cli import main
from labtune.operator.settings import LeaderElectionSettings


def test_defaults_are_kubernetes_controllers_timing_and_identities_are_unique() -> None:
    first, second = LeaderElectionSettings(), LeaderElectionSettings()
    assert (first.lease_duration, first.renew_deadline, first.retry_period) == (12, 8, 2)
    assert first.identity != second.identity  # a restarted process never passes for its predecessor


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(10, 10, 2), (15, 20, 2), (15, 2, 2), (15, 10, 9)],
)
def test_the_renew_deadline_must_lie_between_the_retry_period_and_the_lease(
    lease: int, renew: int, retry: int
) -> None:
    with pytest.raises(ValidationError, match=r"1\.2 x retry period < renew deadline < lease duration"):
        LeaderElectionSettings(lease_duration=lease, renew_deadline=renew, retry_period=retry)


def test_bad_timing_at_the_command_line_is_one_line_and_starts_nothing() -> None:
    result = CliRunner().invoke(
        main, ["operator", "run", "--leader-election", "--leader-election-renew-deadline", "20"]
    )
    assert result.exit_code == 2
    assert "renew deadline < lease duration, got 2, 20 and 12 seconds" in result.output
    assert "Traceback" not in result.output
