"""Delivers reports and heartbeats to the intake API (``docs/intake-api.md``).

- ``POST {intake}/v1/results`` with ``Authorization: Bearer <key>``: one experiment's
  cumulative counts under a sequence number that ``Store.prepare_report`` assigned and
  stored before the first attempt. A retry resends the same sequence and counts; a newer
  report supersedes an undelivered older one (the counts are cumulative).
- ``POST {intake}/v1/heartbeat``: the agent's version, start time and experiments.

2xx is delivered (also ``{"accepted": false}``, a stale sequence). 5xx, 429, timeouts
and connection errors are retried with exponential backoff and jitter (or after
``Retry-After``); 401 slowly (the key may be rotating); 422 at the next interval; the
other 4xx can never succeed with the same body, so the report is logged and dropped,
and after a 403 (not this server's experiment) nothing more is sent for that revision.
This module decides nothing about counts and never logs the key.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from smart_agent import __version__
from smart_agent.settings import AgentSettings
from smart_agent.store import PendingReport, Store

log = logging.getLogger("smart_agent.reporter")


@dataclass
class _Retry:
    attempts: int = 0
    not_before: float = 0.0  # monotonic


@dataclass
class Outcome:
    """How one call ended: ``status`` 0 means no answer (timeout, connection error)."""

    status: int
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class ReporterState:
    sent: int = 0
    delivered: int = 0
    refused: int = 0
    failures: int = 0
    last_error: str | None = None
    heartbeat_ok_at: float | None = None  # epoch seconds
    heartbeat_error: str | None = None
    retries: dict[str, _Retry] = field(default_factory=dict)
    # Experiments the intake says are not this server's (403), by the revision refused:
    # no more reports for them until another revision is deployed.
    stopped: dict[str, str] = field(default_factory=dict)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Reporter:
    """Sends what the store has pending; remembers when to try again."""

    def __init__(self, settings: AgentSettings, store: Store, started_at: str) -> None:
        self.settings = settings
        self.store = store
        self.started_at = started_at
        self.state = ReporterState()
        self._heartbeat_retry = _Retry()
        self._session: aiohttp.ClientSession | None = None
        self._random = random.Random()  # noqa: S311 (jitter, not secrets)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.intake_url)

    async def __aenter__(self) -> Reporter:
        headers = {"User-Agent": f"smart-agent/{__version__}"}
        if self.settings.key is not None:
            headers["Authorization"] = f"Bearer {self.settings.key.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def backoff(self, attempts: int) -> float:
        """Exponential, capped, with jitter: half fixed, half random."""
        growth: float = 2.0 ** min(attempts - 1, 30)
        cap = min(self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * growth)
        return cap / 2 + self._random.uniform(0, cap / 2)

    async def _post(self, path: str, body: dict[str, Any]) -> Outcome:
        assert self._session is not None and self.settings.intake_url
        url = self.settings.intake_url.rstrip("/") + path
        try:
            # Compact JSON: a report of samples is mostly numbers and separators.
            data = json.dumps(body, separators=(",", ":"))
            headers = {"Content-Type": "application/json"}
            async with self._session.post(url, data=data, headers=headers) as response:
                text = await response.text()
                if 200 <= response.status < 300:
                    reply = _json(text)
                    if isinstance(reply, dict) and reply.get("accepted") is False:
                        log.info(
                            "%s: the intake already had it (%s); not an error",
                            path,
                            reply.get("reason", "no reason"),
                        )
                    return Outcome(response.status)
                reason = _reason(text) or text[:200] or response.reason or ""
                return Outcome(
                    response.status,
                    f"HTTP {response.status}: {reason}",
                    _retry_after(response.headers),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(0, f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def send_pending(self) -> int:
        """Try every pending report whose retry time has come; returns how many arrived."""
        if not self.enabled:
            return 0
        delivered = 0
        for report in self.store.pending_reports():
            retry = self.state.retries.setdefault(report.experiment, _Retry())
            if time.monotonic() < retry.not_before:
                continue
            if await self._send(report, retry):
                delivered += 1
        return delivered

    def _retry_delay(self, outcome: Outcome, retry: _Retry) -> float | None:
        """When to resend the same report, or None to drop it (docs/intake-api.md)."""
        status = outcome.status
        if status == 0 or status >= 500 or status == 429:
            return outcome.retry_after or self.backoff(retry.attempts)
        if status == 401:  # the key may be being rotated: slowly
            return max(self.backoff(retry.attempts), self.settings.backoff_max_seconds)
        if status == 422:  # the Experiment is being changed: at the next interval
            return self.settings.report_seconds
        return None  # 400, 403, 409, 413, 415: the same body can never succeed

    async def _send(self, report: PendingReport, retry: _Retry) -> bool:
        body = {**report.payload, "sentAt": now_iso()}
        self.state.sent += 1
        outcome = await self._post("/v1/results", body)
        if outcome.ok:
            self.store.report_done(report.experiment, report.sequence)
            self.state.delivered += 1
            retry.attempts = 0
            retry.not_before = 0.0
            return True
        self.state.last_error = outcome.error
        retry.attempts += 1
        delay = self._retry_delay(outcome, retry)
        if delay is None:
            log.warning(
                "intake refused %s sequence %d: %s",
                report.experiment,
                report.sequence,
                outcome.error,
            )
            self.store.report_done(report.experiment, report.sequence, outcome.error)
            self.state.refused += 1
            if outcome.status == 403:
                self.state.stopped[report.experiment] = str(report.payload.get("revision"))
            return False
        retry.not_before = time.monotonic() + delay
        self.store.report_failed(report.experiment, outcome.error or "unknown")
        self.state.failures += 1
        log.warning(
            "report of %s sequence %d not delivered (%s); retry in %.1f s",
            report.experiment,
            report.sequence,
            outcome.error,
            delay,
        )
        return False

    def may_report(self, experiment: str, revision: str) -> bool:
        return self.state.stopped.get(experiment) != revision

    async def heartbeat(self, experiments: list[dict[str, str]]) -> float:
        """Send one heartbeat; returns the seconds until the next one is due."""
        if not self.enabled:
            return self.settings.heartbeat_seconds
        body = {
            "version": __version__,
            "startedAt": self.started_at,
            "sentAt": now_iso(),
            "experiments": experiments,
        }
        outcome = await self._post("/v1/heartbeat", body)
        if outcome.ok:
            self.state.heartbeat_ok_at = time.time()
            self.state.heartbeat_error = None
            self._heartbeat_retry = _Retry()
            return self.settings.heartbeat_seconds
        self.state.heartbeat_error = outcome.error
        self._heartbeat_retry.attempts += 1
        delay = self._retry_delay(outcome, self._heartbeat_retry)
        log.warning("heartbeat failed (%s)", outcome.error)
        if delay is None:  # refused: sooner would not help
            return self.settings.heartbeat_seconds
        return min(delay, self.settings.heartbeat_seconds)


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _reason(text: str) -> str | None:
    """Why the intake refused, from its reply (docs/intake-api.md): an error reply
    carries ``error`` (a code) and ``message``; a not-accepted one carries ``reason``."""
    body = _json(text)
    if not isinstance(body, dict):
        return None
    if body.get("message") is not None:
        code = body.get("error")
        return f"{code}: {body['message']}" if code else str(body["message"])
    if body.get("reason") is not None:
        return str(body["reason"])
    return None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
