"""The agent's local control endpoint: a unix socket that only root can reach.

``GET /status`` returns ``Agent.status()``; ``POST /reload`` applies the deployments now
and answers once nginx serves the result (or refused it). ``smart-agent status`` and
``smart-agent reload`` are its clients. Nothing here is reachable from the network.

A unix socket path is limited to 107 bytes; a deeper root (a simulated host in a test's
temporary folder) is reached through ``/proc/self/fd/<folder>/control.sock`` instead.
"""

from __future__ import annotations

import contextlib
import grp
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from smart_agent.agent import Agent

MAX_SOCKET_PATH = 100
AGENT_KEY: web.AppKey[Agent] = web.AppKey("agent")


@contextlib.contextmanager
def _short_path(path: Path) -> Any:
    """A path to ``path`` short enough for a unix socket (Linux only when shortened)."""
    if len(str(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[AGENT_KEY].status())


async def _reload(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    result = await agent.serving.apply("reload command", force=True)
    return web.json_response({"apply": result.as_dict(), "status": agent.status()})


def create_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT_KEY] = agent
    app.router.add_get("/status", _status)
    app.router.add_post("/reload", _reload)
    return app


class ControlServer:
    """Serves ``create_app`` on the control socket while the agent runs (``Agent.open``
    starts it once nginx serves and stops it first on the way out)."""

    def __init__(self, agent: Agent, path: Path) -> None:
        self.agent = agent
        self.path = path
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        # Only the agent's user, or also a group it shares with the operator's deploy
        # user (a server: ``smart-agent reload`` over SSH without root).
        group = self.agent.settings.control_group
        gid = grp.getgrnam(group).gr_gid if group else -1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.parent.chmod(0o750 if group else 0o700)
        if group:
            os.chown(self.path.parent, -1, gid)
        self.path.unlink(missing_ok=True)  # left by a killed agent; the lock says it is ours
        self._runner = web.AppRunner(create_app(self.agent), access_log=None)
        await self._runner.setup()
        with _short_path(self.path) as address:
            await web.UnixSite(self._runner, address).start()
        self.path.chmod(0o660 if group else 0o600)
        if group:
            os.chown(self.path, -1, gid)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.path.unlink(missing_ok=True)


class AgentNotRunning(RuntimeError):
    """Nothing answers on the control socket."""


@contextlib.asynccontextmanager
async def _client(path: Path, seconds: float) -> AsyncIterator[aiohttp.ClientSession]:
    with _short_path(path) as address:
        connector = aiohttp.UnixConnector(path=address)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as session:
            yield session


async def call(path: Path, method: str, route: str, seconds: float = 60.0) -> dict[str, Any]:
    """Ask the running agent; raise ``AgentNotRunning`` when none answers."""
    if not path.exists():  # noqa: ASYNC240 (one stat of a local socket)
        raise AgentNotRunning(f"no agent socket at {path}")
    try:
        async with (
            _client(path, seconds) as session,
            session.request(method, f"http://smart-agent{route}") as response,
        ):
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as exc:
        raise AgentNotRunning(f"no agent answers on {path}: {exc}") from exc
