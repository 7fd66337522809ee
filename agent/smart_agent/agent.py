"""The running agent (``smart-agent run``): one asyncio process per root, made of parts.

- ``Serving`` (``serving.py``): chooses what nginx serves and applies it (*serve* loop).
- ``Counting`` (``counting.py``): the access log into the store (*count* loop).
- ``Reporting`` (``reporting.py``) over the ``Reporter``: reports and heartbeats to the
  intake (*report* and *heartbeat* loops).
- ``LatencyProbe`` (``latency.py``): the probe of performance experiments (*probe*).
- ``ControlServer`` (``control.py``): ``status`` and ``reload`` on a local socket.

``Agent.open`` takes the root's lock (only one agent runs per root), opens the store
and the parts in this order (the follower and the good revisions restored from the
previous run), applies what to serve, starts the control socket, and yields the agent
with every part open; ``Agent.run`` runs the loops until ``stop`` is set (or one of
them dies), and leaving ``open`` closes the parts in reverse order and releases the
lock. nginx runs as a daemon of its own and keeps serving while the agent is down,
unless ``stop_nginx_on_exit``.

The agent never stores an IP address and never reads one: nginx hashes the visitor
before the log is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

from smart_agent import __version__
from smart_agent._loops import Clock
from smart_agent.control import ControlServer
from smart_agent.counting import Counting
from smart_agent.latency import LatencyProbe
from smart_agent.nginx import Nginx, served_parts
from smart_agent.reporter import Reporter, now_iso
from smart_agent.reporting import Reporting
from smart_agent.serving import Serving
from smart_agent.settings import AgentSettings
from smart_agent.store import Store

log = logging.getLogger("smart_agent")


class AgentLocked(RuntimeError):
    """Another agent already runs on this root."""


@contextlib.contextmanager
def _root_lock(settings: AgentSettings) -> Iterator[None]:
    """Hold ``agent.lock`` (with our pid in it) or raise ``AgentLocked``."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    handle = (settings.state_dir / "agent.lock").open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AgentLocked(f"another smart-agent runs on {settings.root}") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


class Agent:
    """One agent on one root, every part open: made by ``open``, then ``run``."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        started_at: str,
        store: Store,
        serving: Serving,
        counting: Counting,
        reporting: Reporting,
        latency: LatencyProbe,
    ) -> None:
        self.settings = settings
        self.started_at = started_at
        self.store = store
        self.serving = serving
        self.counting = counting
        self.reporting = reporting
        self.latency = latency
        self.control = ControlServer(self, settings.control_socket)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: AgentSettings, *, clock: Clock = time.time
    ) -> AsyncIterator[Agent]:
        """The agent of ``settings.root``, serving and answering on its control socket;
        raises ``AgentLocked`` when another agent holds the root."""
        started_at = now_iso()
        async with contextlib.AsyncExitStack() as parts:
            parts.enter_context(_root_lock(settings))
            for folder in (settings.run_dir, settings.log_dir, settings.experiments_dir):
                folder.mkdir(parents=True, exist_ok=True)
            store = Store(settings.db_path)
            parts.callback(store.close)
            nginx = Nginx(settings)
            counting = Counting(settings, store, nginx, clock)
            parts.callback(counting.close)
            counting.restore()
            serving = Serving(settings, store, nginx, clock)
            serving.restore()
            if settings.stop_nginx_on_exit:
                parts.callback(nginx.stop)
            reporter = await parts.enter_async_context(Reporter(settings, store, started_at))
            latency = LatencyProbe(settings, store, serving)
            parts.push_async_callback(latency.close)
            agent = cls(
                settings,
                started_at=started_at,
                store=store,
                serving=serving,
                counting=counting,
                reporting=Reporting(settings, store, reporter, serving),
                latency=latency,
            )
            result = await serving.apply("start", force=True)
            if not result.ok:
                log.error("could not serve at start: %s", result.error)
            parts.push_async_callback(agent.control.stop)
            await agent.control.start()
            log.info(
                "smart-agent %s serving on %s (root %s)",
                __version__,
                settings.listen,
                settings.root,
            )
            yield agent

    async def run(self, stop: asyncio.Event) -> None:
        """Run the loops until ``stop`` is set; a loop that dies ends ``run`` with its error."""
        loops = {
            "serve": self.serving.run,
            "count": self.counting.run,
            "report": self.reporting.run_reports,
            "heartbeat": self.reporting.run_heartbeats,
            "probe": self.latency.run,
        }
        tasks = [asyncio.create_task(loop(stop), name=name) for name, loop in loops.items()]
        try:
            await _until_stopped(stop, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        serving = None
        plan = self.serving.plan
        if plan is not None and plan.deployment is not None:
            manifest = plan.deployment.manifest
            serving = {
                "experiment": manifest.name,
                "revision": manifest.revision,
                "type": manifest.type,
                "mode": manifest.serving.mode,
                "counted": manifest.counted,
                "shares": {name: units / 100 for name, units in served_parts(plan) if name},
                "activeVariant": plan.active_variant,
                "goalUrl": manifest.goal_url,
            }
        reporter = self.reporting.reporter.state
        lag = self.counting.follower.last_lag
        return {
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "startedAt": self.started_at,
                "root": str(self.settings.root),
                "domain": self.settings.domain,
                "running": True,
            },
            "nginx": {
                "pid": self.serving.nginx.master_pid(),
                "listen": self.settings.listen,
                "tls": (
                    {"listen": self.settings.tls_listen, "certificate": plan.tls.digest}
                    if plan and plan.tls
                    else None
                ),
                "config": self.serving.config,
                "lastApply": self.serving.last_apply.as_dict(),
            },
            "saltDay": plan.day if plan else None,
            "serving": serving,
            "problems": {**self.serving.scan.problems, **self.serving.conflicts},
            "experiments": [
                _experiment_status(self.store, name)
                for name in self.reporting.reported_experiments()
            ],
            "log": {
                "files": self.counting.follower.describe(),
                "lines": dict(self.store.counters()),
                "lagSeconds": round(lag, 3) if lag is not None else None,
                "visitorIdsKept": self.store.visitor_ids(),
            },
            "intake": {
                "url": self.settings.intake_url,
                "sent": reporter.sent,
                "delivered": reporter.delivered,
                "refused": reporter.refused,
                "failures": reporter.failures,
                "lastError": reporter.last_error,
                "heartbeatAt": _iso(reporter.heartbeat_ok_at),
                "heartbeatError": reporter.heartbeat_error,
            },
            # Synthetic: the agent loads its own pages over loopback (no network), so
            # these timings are shown but never decide; visitors' browsers' do.
            "probe": {"synthetic": True, **self.latency.state},
        }


def offline_status(settings: AgentSettings) -> dict[str, Any]:
    """What the files say when no agent answers (``smart-agent status`` fallback)."""
    status: dict[str, Any] = {
        "agent": {"version": __version__, "root": str(settings.root), "running": False},
        "nginx": {"pid": Nginx(settings).master_pid(), "listen": settings.listen},
        "experiments": [],
    }
    if not settings.db_path.exists():
        return status
    store = Store(settings.db_path, readonly=True)
    try:
        for name in store.experiment_names():
            status["experiments"].append(_experiment_status(store, name))
        status["log"] = {"lines": store.counters()}
    finally:
        store.close()
    return status


def _experiment_status(store: Store, name: str) -> dict[str, Any]:
    row = store.experiment_row(name)
    timed = store.timed_views(name)
    return {
        "name": name,
        "revision": row.get("revision"),
        "variants": {
            v: {"visitors": c.visitors, "conversions": c.conversions}
            | ({"timedViews": timed[v]} if v in timed else {})
            for v, c in sorted(store.totals(name).items())
        },
        "sequence": row.get("sequence", 0),
        "ackedSequence": row.get("acked_sequence"),
        "pendingSequence": row.get("pending_sequence"),
        "lastError": row.get("last_error"),
        "reportedAt": _iso(row.get("reported_at")),
    }


def _iso(epoch: object) -> str | None:
    if not isinstance(epoch, int | float):
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def _until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for ``stop``; a loop that dies takes the agent down (systemd restarts it)."""
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    for task in done:
        if task is not stopper and (error := task.exception()) is not None:
            raise error
