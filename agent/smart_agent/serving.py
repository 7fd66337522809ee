"""What nginx serves: the agent's choice among the deployments, and its application.

``Serving`` scans the ``current`` symlinks, chooses the one experiment that holds ``/``
(the others are reported as conflicts), plans the day's salt and a performance
experiment's time window, and applies the plan: render, ``nginx -t``, install, reload,
then wait until nginx answers with the new configuration. A configuration nginx refuses
is never installed: the old one keeps serving and the refusal shows in ``status``. The
last revision of each experiment that nginx took is kept in the store, so that after a
restart a broken new revision still falls back to it.

Its loop (*serve*) checks every second the salt day (a new random salt at midnight
UTC), the time window and that nginx is up, and every ``deploy_poll_seconds`` the
deployments. This module never reads the access log and never talks to the intake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smart_agent import deploy, probe, tls
from smart_agent._loops import Clock, pause
from smart_agent.deploy import Deployment, ScanResult
from smart_agent.nginx import Nginx, NginxError, ServePlan, config_id, render_config
from smart_agent.reporter import now_iso
from smart_agent.settings import AgentSettings
from smart_agent.store import Store, utc_day

log = logging.getLogger("smart_agent")

GOOD = "good:"  # meta key prefix: the last revision nginx took, per experiment


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


class Serving:
    """Chooses what nginx serves and applies it; one ``apply`` at a time."""

    def __init__(self, settings: AgentSettings, store: Store, nginx: Nginx, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.nginx = nginx
        self.clock = clock
        self.scan = ScanResult()
        self.deployment: Deployment | None = None  # None: no experiment is served
        self.plan: ServePlan | None = None  # None: nothing applied yet
        self.config: str | None = None  # id of the live configuration
        self.last_apply = ApplyResult(ok=True, changed=False, reason="not applied yet")
        self.conflicts: dict[str, str] = {}
        self._good: dict[str, Deployment] = {}  # last deployment of each that nginx took
        self._fingerprint: object = None
        self._apply_lock = asyncio.Lock()

    def restore(self) -> None:
        """Take back the good revisions of the previous run from the store."""
        for name, path in self.store.metas(GOOD).items():
            # What served before a restart still serves if its current revision is broken.
            with contextlib.suppress(deploy.DeployError):
                self._good[name] = deploy.load_revision(name, Path(path))

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
        day = utc_day(now)
        active = None
        if deployment and deployment.manifest.type == "performance":
            active = probe.active_variant(deployment.manifest, now)
        return ServePlan(deployment, day, self.store.salt(day), active, tls.stage(self.settings))

    async def apply(self, reason: str, *, force: bool = False) -> ApplyResult:
        """Bring nginx in line with the deployments, the day and the time window."""
        async with self._apply_lock:
            now = self.clock()
            scan = deploy.scan(self.settings.experiments_dir)
            self.scan = scan
            self._fingerprint = (scan.fingerprint(), tls.fingerprint(self.settings))
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
            self.deployment = chosen
            self.conflicts = conflicts
            self.last_apply = result
            self.store.forget_salts(keep=plan.day)
            tls.prune(self.settings, plan.tls)
            if chosen is not None:
                self._good[chosen.name] = chosen
                self.store.set_meta(GOOD + chosen.name, str(chosen.path))
                if self.store.register(chosen.name, chosen.manifest.uid, chosen.manifest.revision):
                    log.warning("%s has a new uid: its counts start afresh", chosen.name)
            return result

    def base_url(self) -> str:
        """Where the agent itself loads its site: over HTTPS once there is a certificate
        (plain HTTP then only redirects)."""
        settings = self.settings
        if self.plan is not None and self.plan.tls is not None:
            host = settings.tls_listen.rpartition(":")[0] or settings.listen_host
            return f"https://{host}:{settings.tls_port}"
        return f"http://{settings.listen_host}:{settings.listen_port}"

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

    async def run(self, stop: asyncio.Event) -> None:
        """The *serve* loop: apply again when the day, the window or a deployment changed."""
        last_scan = time.monotonic()
        while not stop.is_set():
            await pause(stop, 1.0)
            reason = self._needs_apply(self.clock())
            if reason is None and time.monotonic() - last_scan >= self.settings.deploy_poll_seconds:
                last_scan = time.monotonic()
                current = (
                    deploy.scan(self.settings.experiments_dir).fingerprint(),
                    tls.fingerprint(self.settings),
                )
                if current != self._fingerprint:
                    reason = "deployment or certificate changed"
            if reason is not None:
                await self.apply(reason, force=reason == "nginx was not running")


def _describe(deployment: Deployment | None) -> str:
    if deployment is None:
        return "no experiment"
    m = deployment.manifest
    return f"{m.name} revision {m.revision} ({m.serving.mode})"
