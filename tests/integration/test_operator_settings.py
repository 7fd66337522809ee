"""The operator refuses bad settings at start-up, naming the variable and the fix,
instead of failing one Domain at a time later."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

OPERATOR = Path(sys.executable).with_name("smart-operator")


@pytest.mark.parametrize(
    ("sources", "said"),
    [
        ('["203.0.113.7"]', "'203.0.113.7' is an address, not a network: write 203.0.113.7/32"),
        ('["2001:db8::7"]', "write 2001:db8::7/128"),
        ('["10.0.1.5/24"]', "'10.0.1.5/24' is not a CIDR network"),
    ],
)
def test_a_bad_ssh_source_stops_the_operator_at_start_up(sources: str, said: str) -> None:
    env = {**os.environ, "SMART_SSH_SOURCES": sources}
    done = subprocess.run(
        [str(OPERATOR)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "SMART_SSH_SOURCES" in done.stderr and said in done.stderr
