"""Reads nginx's JSON access log into counts, exactly once, across restarts and rotations.

``classify`` turns one log line into an exposure, a conversion or a reason to skip it:
bots (a bot user agent or none, flagged by nginx), ``HEAD`` and other non-page methods,
prefetches, requests served while the experiment was not randomising (``control`` or
``winner`` mode), assets, errors, conversions that are not a same-site ``POST`` (a
plain link or another site's page), and conversions for a variant the experiment does
not have. Whether the visitor was exposed to the variant is the store's to decide.
A real-user timing (``timing``: a same-site ``POST`` to ``/_smart/timing`` answered with
204) counts under the same rules, and only for a performance experiment's page view
loaded outside the wash-out at the start of a time window (``timing.in_washout``).

``LogFollower`` follows the log by file identity (device, inode and first line), not by
name: a renamed log keeps being read until nginx has reopened the new one and the old
one has stopped growing, and the position in each file is committed with the counts it
produced (``Store.commit``). After a restart the follower finds each unfinished file
again by its inode, also under a new name (``access.log.1``); a rotated file it never
saw (two rotations between two polls, or while it was down) is read from its start.
Reading a line twice is harmless, since counts are sets. Use rename-and-reopen rotation,
never copytruncate, and keep a rotated file uncompressed until the agent has finished
it (logrotate's ``delaycompress``).

This module never sends anything and never writes the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from smart_agent import timing
from smart_agent.store import Event, LogFile, Store

CHUNK = 1 << 20  # bytes read at once
MAX_CHUNKS_PER_POLL = 16
CONVERT_PATH = "/_smart/convert"
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4")
ADOPT_WITHIN_SECONDS = 2 * 86400  # older lines belong to days already compacted
SWEEP_SECONDS = 5.0
ROTATED_BY_AGENT = re.compile(r"^access\.log\.\d{8}T\d{6}Z(\.\d+)?$")
# A line can only be counted if nginx wrote one of these; the rest are skipped unparsed.
_MAY_COUNT = (
    '"ct":"text/html',
    '"u":"' + CONVERT_PATH + '"',
    '"u":"' + timing.TIMING_PATH + '"',
)
# The keys of the access log's lines, in the order nginx writes them (``nginx.py``).
LOG_KEYS = ("e", "r", "d", "mode", "t", "id", "v", "cv", "m", "u", "s", "ct", "b", "p", "rum")
# Keys that lines written by an older agent's nginx do not have (read as empty).
_NEWER_KEYS = frozenset({"rum"})
# Such a line when no value holds an escaped character: nearly every line.
_PLAIN_LINE = re.compile("{" + ",".join(f'"{key}":"([^"\\\\]*)"' for key in LOG_KEYS) + "}")

# Variants of (experiment, revision), or None when that revision is unknown.
KnownVariants = Callable[[str, str], tuple[str, ...] | None]
# A performance experiment's (window seconds, wash-out seconds) by (experiment,
# revision); None for other experiments and unknown revisions (their timings are skipped).
KnownWindows = Callable[[str, str], tuple[int, int] | None]


def _no_windows(experiment: str, revision: str) -> None:
    return None


def parse_line(line: str) -> tuple[str, ...]:
    """The values of one access log line, in ``LOG_KEYS`` order.

    nginx writes every value as a JSON string, escaping quotes and backslashes, so a
    line with no escaped character is read by one regular expression, several times
    faster than ``json.loads``, which reads the others. ``ValueError`` or ``KeyError``
    if the line is not a JSON object with those keys.
    """
    match = _PLAIN_LINE.fullmatch(line)
    if match is not None:
        return match.groups()
    entry = json.loads(line)
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    return tuple(str(entry.get(key, "") if key in _NEWER_KEYS else entry[key]) for key in LOG_KEYS)


def classify(
    line: str, known: KnownVariants, windows: KnownWindows = _no_windows
) -> tuple[Event | None, str]:
    """The event one log line stands for, or None and the reason it does not count."""
    if _MAY_COUNT[0] not in line and _MAY_COUNT[1] not in line and _MAY_COUNT[2] not in line:
        return None, "other"
    try:
        (experiment, revision, day, mode, at_text, hex_id, variant, claimed, method, path,
         status, content_type, bot, prefetch, rum) = parse_line(line)  # fmt: skip
        if mode != "split":
            return None, "not_randomised"
        if bot == "1":
            return None, "bot"
        if prefetch == "1":
            return None, "prefetch"
        if not experiment or not variant or len(hex_id) != 16:
            return None, "other"
        visitor = int(hex_id, 16) - (1 << 63)  # stored as a signed 64-bit integer
        at = float(at_text)
    except (ValueError, KeyError, TypeError):
        return None, "malformed"
    if path == CONVERT_PATH:
        # nginx answers a same-site POST with 303 (counted), a POST from another site
        # and any other method with 302 (``nginx.py``).
        if method != "POST":
            return None, "method"
        if status == "302":
            return None, "cross_site"
        if status != "303":
            return None, "other"
        claimed = claimed or variant  # performance pages carry no variant
        variants = known(experiment, revision)
        if (variants is None and claimed != variant) or (
            variants is not None and claimed not in variants
        ):
            return None, "unknown_variant"
        event = Event(experiment, revision, day, visitor, claimed, "conversion", at)
        return event, "conversion"
    if path == timing.TIMING_PATH:
        return _timing(
            experiment, revision, day, visitor, variant, at, method, status, rum, windows
        )
    if method != "GET":
        return None, "method"
    if status not in ("200", "304") or path.startswith("/_smart/"):
        return None, "other"
    if not content_type.startswith("text/html"):
        return None, "other"
    return Event(experiment, revision, day, visitor, variant, "exposure", at), "exposure"


def _timing(
    experiment: str,
    revision: str,
    day: str,
    visitor: int,
    variant: str,
    at: float,
    method: str,
    status: str,
    rum: str,
    windows: KnownWindows,
) -> tuple[Event | None, str]:
    """A beacon line: nginx answers a same-site POST with 204, another site's with 403."""
    if method != "POST":
        return None, "method"
    if status == "403":
        return None, "cross_site"
    if status != "204":
        return None, "other"
    measured = timing.parse(rum)
    if measured is None:
        return None, "malformed_timing"
    window = windows(experiment, revision)
    if window is None:
        return None, "not_performance"
    if timing.in_washout(at, measured.age_ms, *window):
        return None, "washout"
    return Event(experiment, revision, day, visitor, variant, "timing", at, measured), "timing"


@dataclass
class _Open:
    """A log file the follower is reading."""

    handle: IO[bytes]
    dev: int
    ino: int
    path: str
    offset: int
    state: str  # active or draining
    head: str | None = None
    last_growth: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def entry(self) -> LogFile:
        return LogFile(self.dev, self.ino, self.path, self.offset, self.state, self.head)  # type: ignore[arg-type]


@dataclass
class PollResult:
    new_counts: int = 0
    lines: int = 0
    caught_up: bool = True  # every file read to its end, none left draining
    more_to_read: bool = False  # a file had more than one poll reads: poll again at once
    lag_seconds: float | None = None  # from nginx writing the last counted line to now


def first_line_digest(handle: IO[bytes]) -> str | None:
    """Identifies a file together with its inode: nginx's first line holds a timestamp."""
    handle.seek(0)
    line = handle.readline(4096)
    if not line.endswith(b"\n"):
        return None
    return hashlib.sha256(line).hexdigest()[:16]


class LogFollower:
    """Follows one access-log path through rotations, committing as it goes."""

    def __init__(
        self,
        path: Path,
        store: Store,
        known: KnownVariants,
        *,
        grace_seconds: float,
        windows: KnownWindows = _no_windows,
    ) -> None:
        self.path = path
        self.store = store
        self.known = known
        self.windows = windows
        self.grace = grace_seconds
        self.files: dict[tuple[int, int], _Open] = {}
        self.finished: dict[tuple[int, int], str | None] = {}  # done files: their heads
        self.stats: Counter[str] = Counter()
        self.last_lag: float | None = None
        self._last_sweep = 0.0

    # -- start and stop -----------------------------------------------------------

    def restore(self) -> None:
        """Reopen every file left unfinished by the previous run, wherever it is now."""
        for entry in self.store.log_files():
            key = (entry.dev, entry.ino)
            if entry.state in ("done", "lost"):
                self.finished[key] = entry.head
                continue
            found = self._find(entry.dev, entry.ino, entry.path)
            handle = found.open("rb") if found is not None else None
            reused = handle is not None and entry.head is not None
            if reused and first_line_digest(handle) != entry.head:  # type: ignore[arg-type]
                handle.close()  # type: ignore[union-attr]
                handle = None
            if found is None or handle is None:
                self.store.set_log_file(_with(entry, state="lost"))
                self.finished[key] = entry.head
                self.stats["lost_files"] += 1
                continue
            size = os.fstat(handle.fileno()).st_size
            offset = entry.offset if size >= entry.offset else 0  # truncated: start over
            state = "active" if found == self.path else "draining"
            opened = _Open(handle, entry.dev, entry.ino, str(found), offset, state, entry.head)
            self.files[key] = opened
            self.store.set_log_file(opened.entry())
        self._follow_path()
        self._adopt_unknown()

    def close(self) -> None:
        for opened in self.files.values():
            opened.handle.close()
        self.files.clear()

    def _siblings(self) -> list[Path]:
        """The log and its rotated copies that can be read (not compressed ones)."""
        try:
            names = sorted(self.path.parent.glob(self.path.name + "*"))
        except FileNotFoundError:
            return []
        return [p for p in names if not p.name.endswith(COMPRESSED)]

    def _find(self, dev: int, ino: int, path: str) -> Path | None:
        for candidate in [Path(path), self.path, *self._siblings()]:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                st = candidate.stat()
                if (st.st_dev, st.st_ino) == (dev, ino):
                    return candidate
        return None

    def _adopt_unknown(self) -> None:
        """Read rotated files the agent never saw (created and renamed between two polls,
        or while it was down). Reading a file twice is harmless: counts are sets."""
        self._last_sweep = time.monotonic()
        recent = time.time() - ADOPT_WITHIN_SECONDS
        for candidate in self._siblings():
            if candidate == self.path:
                continue
            try:
                st = candidate.stat()
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in self.files or st.st_mtime < recent:
                continue
            handle = candidate.open("rb")
            head = first_line_digest(handle)
            if key in self.finished and self.finished[key] == head:
                handle.close()
                continue
            opened = _Open(handle, st.st_dev, st.st_ino, str(candidate), 0, "draining", head)
            self.files[key] = opened
            self.store.set_log_file(opened.entry())
            self.stats["adopted_files"] += 1

    # -- reading ------------------------------------------------------------------

    def poll(self) -> PollResult:
        """Read what is new in every open file, then notice a rotation."""
        result = PollResult()
        for opened in sorted(self.files.values(), key=lambda o: o.state != "draining"):
            self._read(opened, result)
        self._follow_path()
        if time.monotonic() - self._last_sweep > SWEEP_SECONDS:
            self._adopt_unknown()
        now = time.monotonic()
        for opened in list(self.files.values()):
            if opened.state == "draining" and now - opened.last_growth > self.grace:
                self._read(opened, result)
                if now - opened.last_growth > self.grace:
                    self._finish(opened)
        result.caught_up = result.caught_up and not any(
            o.state == "draining" for o in self.files.values()
        )
        result.lag_seconds = self.last_lag
        return result

    def _read(self, opened: _Open, result: PollResult) -> None:
        for _ in range(MAX_CHUNKS_PER_POLL):
            if opened.head is None:
                opened.head = first_line_digest(opened.handle)
            opened.handle.seek(opened.offset)
            data = opened.handle.read(CHUNK)
            end = data.rfind(b"\n") + 1
            if end == 0:
                if len(data) == CHUNK:  # one line longer than a chunk: not nginx's
                    end = len(data)
                    self.stats["malformed"] += 1
                else:
                    return  # nothing new, or half a line that nginx is still writing
            events = []
            reasons: Counter[str] = Counter()
            for line in data[:end].decode(errors="replace").splitlines():
                if not line:
                    continue
                event, reason = classify(line, self.known, self.windows)
                reasons[reason] += 1
                if event is not None:
                    events.append(event)
            opened.offset += end
            opened.last_growth = time.monotonic()
            result.new_counts += self.store.commit(events, opened.entry(), dict(reasons))
            result.lines += sum(reasons.values())
            self.stats.update(reasons)
            if events:
                self.last_lag = max(0.0, time.time() - events[-1].at)
            if len(data) < CHUNK:
                return
        result.caught_up = False  # more to read than one poll takes
        result.more_to_read = True

    def _follow_path(self) -> None:
        """Start reading a new file at the log path; mark the one it replaced draining."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return  # renamed, and nginx has not reopened yet: keep reading the old one
        key = (st.st_dev, st.st_ino)
        if key in self.files:
            return
        handle = self.path.open("rb")
        head = first_line_digest(handle)
        if key in self.finished and head is not None and self.finished[key] == head:
            handle.close()  # a finished file put back under the name: read already
            return
        for opened in self.files.values():
            if opened.state == "active":
                opened.state = "draining"
                opened.last_growth = time.monotonic()
                opened.path = self._where(opened)
                self.store.set_log_file(opened.entry())
        opened = _Open(handle, st.st_dev, st.st_ino, str(self.path), 0, "active", head)
        self.files[key] = opened
        self.store.set_log_file(opened.entry())
        # A file may have come and gone between two polls (two quick rotations).
        self._adopt_unknown()

    def _where(self, opened: _Open) -> str:
        found = self._find(opened.dev, opened.ino, opened.path)
        return str(found) if found else opened.path

    def _finish(self, opened: _Open) -> None:
        opened.handle.close()
        del self.files[opened.key]
        opened.path = self._where(opened)
        self.stats["rotated_files"] += 1
        rotated = Path(opened.path)
        if rotated.parent == self.path.parent and ROTATED_BY_AGENT.match(rotated.name):
            # The agent's own rotation: nothing else wants the file, and once it is gone
            # its inode may be reused, so its record goes too.
            rotated.unlink(missing_ok=True)
            self.store.drop_log_file(opened.dev, opened.ino)
            return
        self.store.set_log_file(_with(opened.entry(), state="done"))
        self.finished[opened.key] = opened.head

    def active_offset(self) -> int:
        return next((o.offset for o in self.files.values() if o.state == "active"), 0)

    def rotate_name(self) -> Path:
        """Where the agent moves the log when it rotates it itself."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        counter = 0
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.{stamp}.{counter}")
        return target

    def describe(self) -> list[dict[str, object]]:
        files = []
        for opened in self.files.values():
            try:
                size = os.fstat(opened.handle.fileno()).st_size
            except OSError:
                size = opened.offset
            files.append(
                {
                    "path": opened.path,
                    "state": opened.state,
                    "offset": opened.offset,
                    "behind_bytes": max(0, size - opened.offset),
                }
            )
        return files


def _with(entry: LogFile, *, state: str) -> LogFile:
    return LogFile(entry.dev, entry.ino, entry.path, entry.offset, state, entry.head)  # type: ignore[arg-type]
