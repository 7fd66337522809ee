"""Fixtures the agent's integration tests share: the loopback intake, one agent host
(real nginx, the real ``smart-agent`` process) and keeping a test clear of midnight UTC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smart_sim.bench.agent import AgentHost, IntakeRecorder


async def clear_of_midnight(margin: float) -> None:
    """Return at once, unless midnight UTC (when the salt, and so every visitor id,
    changes) is less than ``margin`` seconds away: then return just after it."""
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if (midnight - now).total_seconds() < margin:  # wait for a clock time, not for a guess
        await asyncio.sleep((midnight + timedelta(seconds=5) - now).total_seconds())


@pytest.fixture
async def same_day() -> None:
    """A test that compares counts with the truth of one day: keep clear of midnight."""
    await clear_of_midnight(90)


@pytest.fixture
async def intake() -> AsyncIterator[IntakeRecorder]:
    async with IntakeRecorder() as recorder:
        yield recorder


@pytest.fixture
async def host(tmp_path: Path, intake: IntakeRecorder) -> AsyncIterator[AgentHost]:
    async with AgentHost(tmp_path, intake_url=intake.url) as agent_host:
        yield agent_host
