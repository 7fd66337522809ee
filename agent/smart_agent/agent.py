"""The running agent: ties deployments, nginx, the log reader, the store and the reporter
together in one asyncio process (``smart-agent run``).

Loops, each with its own pace:

- *serve*: every second, check the salt day (a new random salt at midnight UTC), the
  time window of a performance experiment and that nginx is up; every
  ``deploy_poll_seconds``, the ``current`` symlinks. A change is applied by ``apply``:
  render, ``nginx -t``, install, reload, then wait until nginx answers with the new
  configuration. A configuration nginx refuses is never installed: the old one keeps
  serving and the refusal shows in ``status``.
- *count*: read the access log every ``poll_seconds``; rotate it past ``log_max_bytes``;
  forget visitor ids of finished days.
- *report*: at most every ``report_seconds`` per experiment, a new cumulative report
  when the counts changed; pending reports are retried with backoff.
- *heartbeat* and, for performance experiments, the latency *probe*.

Only one agent runs per root (a lock file). The agent never stores an IP address and
never reads one: nginx hashes the visitor before the log is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from smart_agent import __version__, deploy, probe
from smart_agent.deploy import Deployment, ExperimentManifest, ScanResult
from smart_agent.logreader import LogFollower
from smart_agent.nginx import Nginx, NginxError, ServePlan, config_id, render_config, served_parts
from smart_agent.reporter import Reporter, now_iso
from smart_agent.settings import AgentSettings
from smart_agent.store import Store

log = logging.getLogger("smart_agent")

Clock = Callable[[], float]
REFRESH_SECONDS = 300.0
GOOD = "good:"  # meta key prefix: the last revision nginx took, per experiment


class AgentLocked(RuntimeError):
    """Another agent already runs on this root."""


@dataclass
class ApplyResult:
    ok: bool
    changed: bool
    reason: str
    error: str | None = None
    at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "reason": self.reason,
            "error": self.error,
            "at": self.at,
        }


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).date().isoformat()


class Agent:
    """One agent on one root; ``run`` until ``stop`` is set."""

    def __init__(self, settings: AgentSettings, *, clock: Clock = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.started_at = now_iso()
        self.nginx = Nginx(settings)
        self.store: Store | None = None
        self.follower: LogFollower | None = None
        self.reporter: Reporter | None = None
        self.scan = ScanResult()
        self.serving: Deployment | None = None
        self.plan: ServePlan | None = None
        self.config: str | None = None  # id of the live configuration
        self.last_apply = ApplyResult(ok=True, changed=False, reason="not applied yet")
        self.conflicts: dict[str, str] = {}
        self._good: dict[str, Deployment] = {}  # last deployment of each that nginx took
        self._fingerprint: object = None
        self._known: dict[tuple[str, str], tuple[str, ...] | None] = {}
        self._apply_lock = asyncio.Lock()
        self._lock_file: TextIO | None = None
        self._probe_state: dict[str, Any] = {"samples": 0, "dropped": 0, "error": None}

    # -- lifecycle ----------------------------------------------------------------

    def _acquire_lock(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.settings.state_dir / "agent.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise AgentLocked(f"another smart-agent runs on {self.settings.root}") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    async def run(self, stop: asyncio.Event) -> None:
        from smart_agent.control import ControlServer

        self._acquire_lock()
        for folder in (self.settings.run_dir, self.settings.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.settings.experiments_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.settings.db_path)
        self.follower = LogFollower(
            self.settings.access_log,
            self.store,
            self._variants_of,
            grace_seconds=self.settings.rotation_grace_seconds,
        )
        self.follower.restore()
        for name, path in self.store.metas(GOOD).items():
            # What served before a restart still serves if its current revision is broken.
            with contextlib.suppress(deploy.DeployError):
                self._good[name] = deploy.load_revision(name, Path(path))
        control = ControlServer(self, self.settings.control_socket)
        try:
            async with Reporter(self.settings, self.store, self.started_at) as reporter:
                self.reporter = reporter
                result = await self.apply("start", force=True)
                if not result.ok:
                    log.error("could not serve at start: %s", result.error)
                await control.start()
                log.info(
                    "smart-agent %s serving on %s (root %s)",
                    __version__,
                    self.settings.listen,
                    self.settings.root,
                )
                tasks = [
                    asyncio.create_task(loop(stop), name=loop.__name__)
                    for loop in (
                        self._serve_loop,
                        self._count_loop,
                        self._report_loop,
                        self._heartbeat_loop,
                        self._probe_loop,
                    )
                ]
                try:
                    await _until_stopped(stop, tasks)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await control.stop()
            if self.settings.stop_nginx_on_exit:
                self.nginx.stop()
            self.follower.close()
            self.store.close()
            if self._lock_file is not None:
                self._lock_file.close()

    # -- what to serve ------------------------------------------------------------

    def _variants_of(self, experiment: str, revision: str) -> tuple[str, ...] | None:
        key = (experiment, revision)
        if key not in self._known:
            folder = self.settings.experiments_dir / experiment / deploy.REVISIONS / revision
            try:
                manifest = deploy.load_revision(experiment, folder).manifest
                self._known[key] = manifest.variant_names
            except deploy.DeployError:
                self._known[key] = None
        return self._known[key]

    def _choose(self, scan: ScanResult) -> tuple[Deployment | None, dict[str, str]]:
        """The experiment that serves `/`: one at a time (docs/agent.md, "One experiment")."""
        candidates: list[Deployment] = []
        for deployment in scan.deployments.values():
            if deployment.manifest.serving.mode != "off":
                candidates.append(deployment)
        for name in scan.problems:
            good = self._good.get(name)
            if good is not None and good.path.is_dir():
                candidates.append(good)  # a broken new revision: keep the last good one
        if not candidates:
            return None, {}

        def order(d: Deployment) -> tuple[float, str]:
            at = d.manifest.deployed_at
            return (at.timestamp() if at else d.path.stat().st_mtime, d.name)

        chosen = max(candidates, key=order)
        conflicts = {
            d.name: f"not served: {chosen.name} holds / (one experiment per server)"
            for d in candidates
            if d.name != chosen.name
        }
        return chosen, conflicts

    def _plan(self, deployment: Deployment | None, now: float) -> ServePlan:
        assert self.store is not None
        day = utc_day(now)
        active = None
        if deployment and deployment.manifest.type == "performance":
            active = probe.active_variant(deployment.manifest, now)
        return ServePlan(deployment, day, self.store.salt(day), active)

    async def apply(self, reason: str, *, force: bool = False) -> ApplyResult:
        """Bring nginx in line with the deployments, the day and the time window."""
        assert self.store is not None
        async with self._apply_lock:
            now = self.clock()
            scan = deploy.scan(self.settings.experiments_dir)
            self.scan = scan
            self._fingerprint = scan.fingerprint()
            chosen, conflicts = self._choose(scan)
            plan = self._plan(chosen, now)
            text = render_config(self.settings, plan)
            wanted = config_id(text)
            assert wanted is not None
            running = self.nginx.master_pid() is not None
            if wanted == self.config and running and not force:
                return self.last_apply
            if running and await self.nginx.live_config() == wanted:
                result = ApplyResult(True, False, reason, at=now_iso())  # a restarted agent
            else:
                try:
                    await self.nginx.test(text)
                    self.nginx.install()
                    retired: set[int] = set()
                    if running:
                        retired = await self.nginx.reload()
                    else:
                        await self.nginx.start()
                    await self.nginx.wait_live(wanted, retired=retired)
                except NginxError as exc:
                    result = ApplyResult(False, False, reason, str(exc), now_iso())
                    self.last_apply = result
                    log.error("nginx kept its previous configuration (%s): %s", reason, exc)
                    return result
                result = ApplyResult(True, True, reason, at=now_iso())
                log.info("nginx serves %s (%s)", _describe(chosen), reason)
            self.config = wanted
            self.plan = plan
            self.serving = chosen
            self.conflicts = conflicts
            self.last_apply = result
            self.store.forget_salts(keep=plan.day)
            if chosen is not None:
                self._good[chosen.name] = chosen
                self.store.set_meta(GOOD + chosen.name, str(chosen.path))
                if self.store.register(chosen.name, chosen.manifest.uid, chosen.manifest.revision):
                    log.warning("%s has a new uid: its counts start afresh", chosen.name)
            return result

    def _needs_apply(self, now: float) -> str | None:
        plan = self.plan
        if plan is None:
            return "not serving yet"
        if utc_day(now) != plan.day:
            return "new salt day"
        deployment = plan.deployment
        if (
            deployment is not None
            and deployment.manifest.type == "performance"
            and probe.active_variant(deployment.manifest, now) != plan.active_variant
        ):
            return "next time window"
        if self.nginx.master_pid() is None:
            return "nginx was not running"
        return None

    async def _serve_loop(self, stop: asyncio.Event) -> None:
        last_scan = time.monotonic()
        while not stop.is_set():
            await _wait(stop, 1.0)
            reason = self._needs_apply(self.clock())
            if reason is None and time.monotonic() - last_scan >= self.settings.deploy_poll_seconds:
                last_scan = time.monotonic()
                if deploy.scan(self.settings.experiments_dir).fingerprint() != self._fingerprint:
                    reason = "deployment changed"
            if reason is not None:
                await self.apply(reason, force=reason == "nginx was not running")

    # -- counting -----------------------------------------------------------------

    async def _count_loop(self, stop: asyncio.Event) -> None:
        assert self.follower is not None and self.store is not None
        last_compact = 0.0
        while not stop.is_set():
            result = self.follower.poll()
            if result.caught_up:
                if self.follower.active_offset() > self.settings.log_max_bytes:
                    await self._rotate_log()
                if time.monotonic() - last_compact > 60:
                    last_compact = time.monotonic()
                    yesterday = utc_day(self.clock() - 86400)
                    if self.store.compact(before_day=yesterday):
                        log.info("forgot the visitor ids of days before %s", yesterday)
                    self.store.forget_log_files(keep_after=time.time() - 3 * 86400)
            if result.caught_up:
                await _wait(stop, self.settings.poll_seconds)

    async def _rotate_log(self) -> None:
        assert self.follower is not None
        target = self.follower.rotate_name()
        self.settings.access_log.rename(target)
        try:
            await self.nginx.reopen()
        except NginxError as exc:
            log.error("log rotated to %s but nginx did not reopen: %s", target, exc)
        else:
            log.info("rotated the access log to %s", target.name)

    # -- reporting ----------------------------------------------------------------

    def report_content(self, name: str) -> dict[str, Any]:
        assert self.store is not None
        totals = self.store.totals(name)
        latencies = self.store.latencies(name)
        deployment = self.serving if self.serving and self.serving.name == name else None
        revision = (
            deployment.manifest.revision
            if deployment
            else self.store.experiment_row(name).get("revision", "")
        )
        order = list(deployment.manifest.variant_names) if deployment else []
        order += sorted(set(totals) - set(order))
        variants = []
        for variant in order:
            counts = totals.get(variant)
            entry: dict[str, Any] = {
                "name": variant,
                "visitors": counts.visitors if counts else 0,
                "conversions": counts.conversions if counts else 0,
            }
            if variant in latencies:
                entry["latenciesMs"] = [round(ms, 3) for ms in latencies[variant]]
            variants.append(entry)
        return {"revision": revision, "variants": variants}

    def reported_experiments(self) -> list[str]:
        assert self.store is not None
        names = set(self.store.experiment_names())
        if self.serving is not None:
            names.add(self.serving.name)
        return sorted(names)

    async def _report_loop(self, stop: asyncio.Event) -> None:
        assert self.store is not None and self.reporter is not None
        last_build = last_refresh = float("-inf")
        while not stop.is_set():
            if time.monotonic() - last_build >= self.settings.report_seconds:
                last_build = time.monotonic()
                # Unchanged counts are sent again now and then, so the intake sees the
                # experiment alive (a new sequence; cumulative counts make it harmless).
                refresh = time.monotonic() - last_refresh >= REFRESH_SECONDS
                if refresh:
                    last_refresh = time.monotonic()
                for name in self.reported_experiments():
                    content = self.report_content(name)
                    if not content["variants"] or not self.reporter.may_report(
                        name, content["revision"]
                    ):
                        continue
                    self.store.prepare_report(name, content, again=refresh)
            await self.reporter.send_pending()
            await _wait(stop, min(0.5, self.settings.report_seconds))

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        assert self.reporter is not None
        while not stop.is_set():
            served = []
            if self.serving is not None:
                manifest = self.serving.manifest
                served.append({"name": manifest.name, "revision": manifest.revision})
            delay = await self.reporter.heartbeat(served)
            await _wait(stop, delay)

    # -- latency probe ------------------------------------------------------------

    async def _probe_loop(self, stop: asyncio.Event) -> None:
        assert self.store is not None
        import aiohttp

        client = probe.Probe(
            f"http://{self.settings.listen_host}:{self.settings.listen_port}",
            self.settings.domain,
        )
        try:
            while not stop.is_set():
                plan = self.plan
                deployment = plan.deployment if plan else None
                manifest = deployment.manifest if deployment else None
                if plan is None or manifest is None or not _probed(manifest):
                    await _wait(stop, 1.0)
                    continue
                assert manifest.performance is not None
                before = (self.config, plan.active_variant)
                try:
                    ms = await client.load(
                        manifest.performance.probe_paths, manifest.performance.probe_mode
                    )
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    self._probe_state["error"] = str(exc)
                else:
                    current = self.plan
                    if current and (self.config, current.active_variant) == before:
                        assert plan.active_variant is not None
                        self.store.add_latency(manifest.name, plan.active_variant, ms)
                        self._probe_state["samples"] += 1
                        self._probe_state["error"] = None
                    else:
                        self._probe_state["dropped"] += 1
                await _wait(stop, manifest.performance.probe_seconds)
        finally:
            await client.close()

    # -- status -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        assert self.store is not None and self.follower is not None
        serving = None
        plan = self.plan
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
        experiments = []
        for name in self.reported_experiments():
            row = self.store.experiment_row(name)
            totals = self.store.totals(name)
            experiments.append(
                {
                    "name": name,
                    "revision": row.get("revision"),
                    "variants": {
                        v: {"visitors": c.visitors, "conversions": c.conversions}
                        for v, c in sorted(totals.items())
                    },
                    "sequence": row.get("sequence", 0),
                    "ackedSequence": row.get("acked_sequence"),
                    "pendingSequence": row.get("pending_sequence"),
                    "lastError": row.get("last_error"),
                    "reportedAt": _iso(row.get("reported_at")),
                }
            )
        reporter = self.reporter.state if self.reporter else None
        lag = self.follower.last_lag
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
                "pid": self.nginx.master_pid(),
                "listen": self.settings.listen,
                "config": self.config,
                "lastApply": self.last_apply.as_dict(),
            },
            "saltDay": plan.day if plan else None,
            "serving": serving,
            "problems": {**self.scan.problems, **self.conflicts},
            "experiments": experiments,
            "log": {
                "files": self.follower.describe(),
                "lines": dict(self.store.counters()),
                "lagSeconds": round(lag, 3) if lag is not None else None,
                "visitorIdsKept": self.store.visitor_ids(),
            },
            "intake": {
                "url": self.settings.intake_url,
                "sent": reporter.sent if reporter else 0,
                "delivered": reporter.delivered if reporter else 0,
                "refused": reporter.refused if reporter else 0,
                "failures": reporter.failures if reporter else 0,
                "lastError": reporter.last_error if reporter else None,
                "heartbeatAt": _iso(reporter.heartbeat_ok_at) if reporter else None,
                "heartbeatError": reporter.heartbeat_error if reporter else None,
            },
            "probe": dict(self._probe_state),
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
            row = store.experiment_row(name)
            status["experiments"].append(
                {
                    "name": name,
                    "revision": row.get("revision"),
                    "variants": {
                        v: {"visitors": c.visitors, "conversions": c.conversions}
                        for v, c in sorted(store.totals(name).items())
                    },
                    "sequence": row.get("sequence", 0),
                    "ackedSequence": row.get("acked_sequence"),
                    "pendingSequence": row.get("pending_sequence"),
                    "lastError": row.get("last_error"),
                    "reportedAt": _iso(row.get("reported_at")),
                }
            )
        status["log"] = {"lines": store.counters()}
    finally:
        store.close()
    return status


def _probed(manifest: ExperimentManifest) -> bool:
    return (
        manifest.type == "performance"
        and manifest.serving.mode == "split"
        and manifest.performance is not None
    )


def _describe(deployment: Deployment | None) -> str:
    if deployment is None:
        return "no experiment"
    m = deployment.manifest
    return f"{m.name} revision {m.revision} ({m.serving.mode})"


def _iso(epoch: object) -> str | None:
    if not isinstance(epoch, int | float):
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


async def _until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Wait for ``stop``; a loop that dies takes the agent down (systemd restarts it)."""
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    for task in done:
        if task is not stopper and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
