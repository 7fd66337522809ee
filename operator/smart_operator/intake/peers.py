"""What the other intake replicas heard: asked before an agent is marked silent.

Behind a balancer each replica receives a share of every agent's heartbeats, and none
is written while nothing changes, so a replica that received none of an agent's for
``silent_seconds`` cannot tell a silent agent from one whose heartbeats all went to
another replica. Before it marks agents silent, it asks every replica (the addresses
``SMART_INTAKE_PEERS`` resolves to: a headless Service, itself included) on their
metrics port, ``POST /internal/heard`` with the Domains in question, and each answers
when it last received a heartbeat from each. One call per replica per sweep, and only
when some agent is due.

A replica that cannot be asked counts as having heard nothing: the mark is then
written, and a replica that did hear the agent clears it on seeing it (``writer``),
before readers believe it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from smart_operator.intake import metrics
from smart_operator.intake.keys import DomainRef

log = logging.getLogger(__name__)

ROUTE = "/internal/heard"
MAX_DOMAINS = 50_000
"""Most Domains one question names (the sweep asks about those due, in one call)."""


def question(refs: list[DomainRef]) -> dict[str, Any]:
    return {"domains": [[ref.namespace, ref.name] for ref in refs]}


def parse_question(body: Any) -> list[DomainRef]:
    """The Domains a peer asks about; ``ValueError`` saying what is wrong."""
    domains = body.get("domains") if isinstance(body, dict) else None
    if not isinstance(domains, list) or len(domains) > MAX_DOMAINS:
        raise ValueError(f"send {{'domains': [[namespace, name], ...]}}, at most {MAX_DOMAINS}")
    refs = []
    for item in domains:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(p, str) for p in item)
        ):
            raise ValueError("each domain is [namespace, name]")
        refs.append(DomainRef(item[0], item[1]))
    return refs


def answer(heard: dict[DomainRef, datetime]) -> dict[str, Any]:
    return {"heard": [[r.namespace, r.name, at.isoformat()] for r, at in heard.items()]}


def parse_answer(body: Any) -> dict[DomainRef, datetime]:
    heard = body.get("heard") if isinstance(body, dict) else None
    if not isinstance(heard, list):
        raise ValueError("no 'heard' list")
    return {DomainRef(ns, name): datetime.fromisoformat(at) for ns, name, at in heard}


class Peers:
    """Asks every replica ``names`` (comma-separated host names or addresses) resolve
    to, on ``port`` (their metrics port)."""

    def __init__(self, names: str, port: int, timeout_seconds: float = 3.0) -> None:
        self._names = [n.strip() for n in names.split(",") if n.strip()]
        self._name = ", ".join(self._names)
        self._port = port
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def addresses(self) -> list[str]:
        loop = asyncio.get_running_loop()
        found: set[str] = set()
        for name in self._names:
            infos = await loop.getaddrinfo(name, self._port, type=socket.SOCK_STREAM)
            found |= {str(info[4][0]) for info in infos}
        return sorted(found)

    async def heard(self, refs: list[DomainRef]) -> dict[DomainRef, datetime]:
        """For each of ``refs`` some replica heard from, the latest time one did."""
        try:
            addresses = await self.addresses()
        except OSError as error:
            metrics.PEER_QUESTIONS.labels("unresolved").inc()
            log.warning("cannot resolve the intake replicas %s: %s", self._name, error)
            return {}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        answers = await asyncio.gather(
            *(self._ask(self._session, address, refs) for address in addresses)
        )
        latest: dict[DomainRef, datetime] = {}
        for heard in answers:
            for ref, at in heard.items():
                if ref not in latest or at > latest[ref]:
                    latest[ref] = at
        return latest

    async def _ask(
        self, session: aiohttp.ClientSession, address: str, refs: list[DomainRef]
    ) -> dict[DomainRef, datetime]:
        host = f"[{address}]" if ":" in address else address
        try:
            async with session.post(
                f"http://{host}:{self._port}{ROUTE}", json=question(refs)
            ) as response:
                response.raise_for_status()
                heard = parse_answer(await response.json())
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as error:
            metrics.PEER_QUESTIONS.labels("error").inc()
            log.warning("intake replica %s did not say what it heard: %s", address, error)
            return {}
        metrics.PEER_QUESTIONS.labels("answered").inc()
        return heard

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def route(heard: Callable[[list[DomainRef]], dict[DomainRef, datetime]]) -> web.RouteDef:
    """``POST /internal/heard`` for the metrics server; ``heard`` is the heartbeat
    writer's ``heard`` method."""

    async def handle(request: web.Request) -> web.Response:
        try:
            refs = parse_question(await request.json())
        except ValueError as error:
            return web.json_response({"error": "bad_question", "message": str(error)}, status=400)
        return web.json_response(answer(heard(refs)))

    return web.post(ROUTE, handle)
