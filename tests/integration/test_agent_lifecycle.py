"""The running agent's lifecycle, in-process over real nginx: one agent per root, and
everything it opened is closed again when it stops, so the next one (systemd's restart)
takes the root over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smart_agent.agent import Agent, AgentLocked
from smart_agent.control import call
from smart_agent.deploy import install_revision
from smart_agent.nginx import Nginx
from smart_agent.settings import AgentSettings
from smart_sim.bench.agent import free_port, landing_experiment, loopback_address


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[AgentSettings]:
    address = loopback_address()
    settings = AgentSettings(
        root=tmp_path / "root",
        listen=f"{address}:{free_port(address)}",
        real_ip_from=["127.0.0.0/8"],
        stop_nginx_on_exit=True,
    )
    manifest, files = landing_experiment()
    install_revision(settings.experiments_dir, manifest, files)
    try:
        yield settings
    finally:
        Nginx(settings).stop()


async def test_a_second_agent_on_the_root_is_refused_and_the_first_serves_on(
    settings: AgentSettings,
) -> None:
    async with Agent.open(settings):
        with pytest.raises(AgentLocked):
            async with Agent.open(settings):
                pass
        # The refused agent touched nothing of the first: its socket still answers.
        status = await call(settings.control_socket, "GET", "/status", seconds=10)
        assert status["agent"]["running"] and status["agent"]["pid"]
        assert status["serving"]["experiment"] == landing_experiment()[0].name


async def test_a_stopped_agent_leaves_the_root_to_the_next(settings: AgentSettings) -> None:
    async with Agent.open(settings) as first:
        config = first.serving.config
        assert config is not None and Nginx(settings).master_pid() is not None
    assert not settings.control_socket.exists()
    assert Nginx(settings).master_pid() is None  # stop_nginx_on_exit
    async with Agent.open(settings) as second:
        assert second.serving.config == config  # the same deployments, the same config
        assert second.serving.last_apply.ok
