"""Counting: the access log, read into the store by the log follower, exactly once.

``Counting`` owns the ``LogFollower``: ``restore`` reopens what the previous run left
unfinished, and its loop (*count*) reads the log every ``poll_seconds``, rotates it past
``log_max_bytes`` and when a new UTC day begins (rename, then nginx reopens; the agent
deletes its own rotated file once read, so the visitor ids in the log are gone within
a day or two, like those in the store) and forgets the visitor ids of finished days.
It tells the follower which variants a deployed revision has and, for its real-user
timings, a performance experiment's time windows and wash-out, from the revision's files.
This module never chooses what nginx serves and never talks to the intake.
"""

from __future__ import annotations

import asyncio
import logging
import time

from smart_agent import deploy
from smart_agent._loops import Clock, pause
from smart_agent.logreader import LogFollower
from smart_agent.nginx import Nginx, NginxError
from smart_agent.settings import AgentSettings
from smart_agent.store import Store, utc_day

log = logging.getLogger("smart_agent")

COMPACT_SECONDS = 60.0


class Counting:
    """The log follower and its loop; ``close`` releases the log files."""

    def __init__(self, settings: AgentSettings, store: Store, nginx: Nginx, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.nginx = nginx
        self.clock = clock
        self._known: dict[tuple[str, str], deploy.ExperimentManifest | None] = {}
        # The UTC day the active log was begun (or the agent started) on.
        self._log_day = utc_day(clock())
        self.follower = LogFollower(
            settings.access_log,
            store,
            self._variants_of,
            grace_seconds=settings.rotation_grace_seconds,
            windows=self._windows_of,
        )

    def restore(self) -> None:
        """Reopen the log files the previous run had not finished."""
        self.follower.restore()

    def close(self) -> None:
        self.follower.close()

    def _manifest(self, experiment: str, revision: str) -> deploy.ExperimentManifest | None:
        key = (experiment, revision)
        if key not in self._known:
            folder = self.settings.experiments_dir / experiment / deploy.REVISIONS / revision
            try:
                self._known[key] = deploy.load_revision(experiment, folder).manifest
            except deploy.DeployError:
                self._known[key] = None
        return self._known[key]

    def _variants_of(self, experiment: str, revision: str) -> tuple[str, ...] | None:
        manifest = self._manifest(experiment, revision)
        return manifest.variant_names if manifest else None

    def _windows_of(self, experiment: str, revision: str) -> tuple[int, int] | None:
        """A performance experiment's time windows and wash-out, for its timings."""
        manifest = self._manifest(experiment, revision)
        if manifest is None or manifest.performance is None:
            return None
        return manifest.performance.window_seconds, manifest.performance.washout

    async def run(self, stop: asyncio.Event) -> None:
        """The *count* loop."""
        last_compact = 0.0
        while not stop.is_set():
            result = self.follower.poll()
            if result.caught_up:
                today = utc_day(self.clock())
                written = self.follower.active_offset()
                if written > self.settings.log_max_bytes or (written and today != self._log_day):
                    await self._rotate_log()
                self._log_day = today
                if time.monotonic() - last_compact > COMPACT_SECONDS:
                    last_compact = time.monotonic()
                    yesterday = utc_day(self.clock() - 86400)
                    if self.store.compact(before_day=yesterday):
                        log.info("forgot the visitor ids of days before %s", yesterday)
                    self.store.forget_log_files(keep_after=time.time() - 3 * 86400)
            # Always give the other loops (reports, heartbeats, the control socket) their
            # turn: a rotated log waiting out its grace is no reason to poll without a
            # pause, and even a backlog is read on only after they have run.
            if result.more_to_read:
                await asyncio.sleep(0)
            else:
                await pause(stop, self.settings.poll_seconds)

    async def _rotate_log(self) -> None:
        target = self.follower.rotate_name()
        self.settings.access_log.rename(target)
        try:
            await self.nginx.reopen()
        except NginxError as exc:
            log.error("log rotated to %s but nginx did not reopen: %s", target, exc)
        else:
            log.info("rotated the access log to %s", target.name)
