"""The agent's durable state: one sqlite database in WAL mode.

What it keeps, and why counting is exact:

- ``exposures`` and ``conversions`` are *sets* of (experiment, salt day, visitor id,
  variant); a line read twice inserts nothing new, so a re-read, a restart or a rotated
  log never counts twice. A conversion counts only for a visitor exposed to that
  variant the same salt day; until that exposure is read it waits in ``unexposed``.
  ``totals`` is updated in the same transaction from the rows that were really
  inserted, and so is the reading position of the log file the lines came from: after
  a crash the agent resumes exactly where the last commit left it.
- Once a day is over and the log is read to its end, that day's visitor ids are deleted
  (``compact``); the totals stay. Visitor ids live for two days at most, salts for one.
- ``timings`` is a uniform sample (a reservoir) per variant of the real-user timings
  of performance experiments' page views; ``timing_views`` the set of page views
  (experiment, salt day, visitor id, variant, page-view id) already taken, so a beacon
  read twice counts once. A timing counts only for a visitor exposed to that variant
  the same salt day (until that page view is read it waits in ``timing_waiting``), and
  at most ``TIMED_VIEWS_PER_VISITOR`` per visitor, variant and day, so no single
  browser can fill the sample; both are compacted with the visitor ids.
- ``experiments`` holds each experiment's report sequence. A report is built (new
  sequence, stored) *before* it is sent, so a retry resends the same sequence and the
  same counts, and a restart never reuses a sequence for other counts.
- ``meta.incarnation`` names these counts: a random id made with the database (on a
  new server, a replaced one included, or when the database was lost) and sent with
  every report, so the intake adds a new server's counts, which start again from zero
  at sequence 1, to the old one's instead of taking them for a replay
  (docs/intake-api.md). A database from before the id gets one when next opened; the
  intake takes the counts it reported without one over when they continue.

This module holds no policy about what to count (``logreader`` decides) or when to
report (``reporter`` decides), and it never sees an IP address.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from smart_agent.timing import Timing

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS salts (day TEXT PRIMARY KEY, secret TEXT NOT NULL);
-- day: YYYYMMDD; visitor: the 64-bit id as a signed integer (small keys insert fast).
CREATE TABLE IF NOT EXISTS exposures (
    experiment TEXT NOT NULL, day INTEGER NOT NULL, visitor INTEGER NOT NULL,
    variant TEXT NOT NULL,
    PRIMARY KEY (experiment, day, visitor, variant)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversions (
    experiment TEXT NOT NULL, day INTEGER NOT NULL, visitor INTEGER NOT NULL,
    variant TEXT NOT NULL,
    PRIMARY KEY (experiment, day, visitor, variant)) WITHOUT ROWID;
-- Conversions whose visitor has no exposure to that variant that day (yet): counted
-- when the exposure is read (lines of two log files can be read out of order), dropped
-- uncounted when the day is compacted.
CREATE TABLE IF NOT EXISTS unexposed (
    experiment TEXT NOT NULL, day INTEGER NOT NULL, visitor INTEGER NOT NULL,
    variant TEXT NOT NULL,
    PRIMARY KEY (experiment, day, visitor, variant)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    experiment TEXT NOT NULL, variant TEXT NOT NULL,
    visitors INTEGER NOT NULL DEFAULT 0, conversions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment, variant));
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, uid TEXT, revision TEXT NOT NULL DEFAULT '',
    sequence INTEGER NOT NULL DEFAULT 0, acked_sequence INTEGER,
    built TEXT, pending_sequence INTEGER, pending_payload TEXT,
    reported_at REAL, last_error TEXT, last_event_at REAL);
CREATE TABLE IF NOT EXISTS log_files (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, path TEXT NOT NULL,
    offset INTEGER NOT NULL, state TEXT NOT NULL, updated REAL NOT NULL, head TEXT,
    PRIMARY KEY (dev, ino));
CREATE TABLE IF NOT EXISTS latencies (
    experiment TEXT NOT NULL, variant TEXT NOT NULL, slot INTEGER NOT NULL, ms REAL NOT NULL,
    PRIMARY KEY (experiment, variant, slot));
CREATE TABLE IF NOT EXISTS latency_seen (
    experiment TEXT NOT NULL, variant TEXT NOT NULL, seen INTEGER NOT NULL,
    PRIMARY KEY (experiment, variant));
CREATE TABLE IF NOT EXISTS timing_views (
    experiment TEXT NOT NULL, day INTEGER NOT NULL, visitor INTEGER NOT NULL,
    variant TEXT NOT NULL, view INTEGER NOT NULL,
    PRIMARY KEY (experiment, day, visitor, variant, view)) WITHOUT ROWID;
-- ttfb and lcp in milliseconds (lcp NULL where the browser has none), bytes transferred.
CREATE TABLE IF NOT EXISTS timings (
    experiment TEXT NOT NULL, variant TEXT NOT NULL, slot INTEGER NOT NULL,
    ttfb REAL NOT NULL, lcp REAL, bytes INTEGER NOT NULL,
    PRIMARY KEY (experiment, variant, slot));
-- Timings whose page view was not read yet (two nginx workers flush their log buffers
-- in either order): taken when it is, dropped uncounted when the day is compacted.
CREATE TABLE IF NOT EXISTS timing_waiting (
    experiment TEXT NOT NULL, day INTEGER NOT NULL, visitor INTEGER NOT NULL,
    variant TEXT NOT NULL, view INTEGER NOT NULL,
    ttfb REAL NOT NULL, lcp REAL, bytes INTEGER NOT NULL, age REAL NOT NULL,
    PRIMARY KEY (experiment, day, visitor, variant, view)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timing_seen (
    experiment TEXT NOT NULL, variant TEXT NOT NULL, seen INTEGER NOT NULL,
    PRIMARY KEY (experiment, variant));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
LATENCY_SAMPLES = 1000  # a uniform sample per variant since the start (reservoir)
TIMING_SAMPLES = 1000  # real-user timings kept per variant, likewise
TIMED_VIEWS_PER_VISITOR = 20  # real-user timings per visitor, variant and salt day
# Visitor ids kept in memory as already counted, at most (about 60 bytes each): repeat
# page views then skip sqlite. Past the bound the memory starts afresh; sqlite decides.
KNOWN_VISITORS = 500_000

EventKind = Literal["exposure", "conversion", "timing"]
FileState = Literal["active", "draining", "done", "lost"]


class Event(NamedTuple):
    """One countable line of the access log (a tuple: one is made per line read)."""

    experiment: str
    revision: str
    day: str  # YYYY-MM-DD, the salt's day
    visitor: int  # the 64-bit id nginx logged, as a signed integer
    variant: str
    kind: EventKind
    at: float  # when nginx logged it (epoch seconds)
    timing: Timing | None = None  # a timing's measurements


@dataclass(frozen=True)
class TimingSample:
    """A variant's real-user timings: the sample kept and how many were taken in all."""

    views: int
    ttfb_ms: list[float]
    lcp_ms: list[float]  # from the views whose browser reports LCP
    transfer_bytes: list[int]


@dataclass(frozen=True)
class LogFile:
    """A log file the agent has read from, known by device, inode and first line."""

    dev: int
    ino: int
    path: str
    offset: int
    state: FileState
    head: str | None = None  # digest of its first line: an inode number can be reused


@dataclass(frozen=True)
class VariantCounts:
    visitors: int
    conversions: int


@dataclass(frozen=True)
class PendingReport:
    experiment: str
    sequence: int
    payload: dict[str, Any]


def utc_day(now: float) -> str:
    """The salt day of an epoch time: its UTC date, ``2026-11-26``."""
    return datetime.fromtimestamp(now, UTC).date().isoformat()


def day_number(day: str) -> int:
    """``2026-11-26`` as 20261126 (ordered like the dates)."""
    return int(day.replace("-", ""))


class Store:
    """The agent's sqlite database (one connection, used from the event loop's thread)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._random = random.Random()  # noqa: S311 (sampling, not secrets)
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 5000")
            self.incarnation = self.meta("incarnation") or ""
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit survives power loss too, so a sequence that was sent is never
        # handed out again for other counts.
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA busy_timeout = 5000")
        self.db.execute("PRAGMA cache_size = -32768")  # 32 MiB: a busy day's ids in memory
        self.db.executescript(SCHEMA)
        self.db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('incarnation', ?)",
            (secrets.token_hex(16),),
        )
        # The id of these counts (128 random bits in hex), made with the database.
        self.incarnation = self.meta("incarnation") or ""
        # (experiment, day, variant) -> visitor ids whose exposure is committed.
        self._known: dict[tuple[str, int, str], set[int]] = {}
        self._known_size = 0
        # Whether conversions wait in ``unexposed`` (read once, then kept up to date).
        self._waiting = self.db.execute("SELECT 1 FROM unexposed LIMIT 1").fetchone() is not None
        self._timings_waiting = (
            self.db.execute("SELECT 1 FROM timing_waiting LIMIT 1").fetchone() is not None
        )

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta and counters --------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def metas(self, prefix: str) -> dict[str, str]:
        rows = self.db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return {str(k)[len(prefix) :]: str(v) for k, v in rows}

    def counters(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.db.execute("SELECT name, value FROM counters")}

    # -- salts --------------------------------------------------------------------

    def salt(self, day: str) -> str:
        """The day's secret salt, created on first use and kept until ``forget_salts``."""
        with self._tx() as db:
            row = db.execute("SELECT secret FROM salts WHERE day = ?", (day,)).fetchone()
            if row is not None:
                return str(row[0])
            secret = secrets.token_hex(32)
            db.execute("INSERT INTO salts (day, secret) VALUES (?, ?)", (day, secret))
            return secret

    def forget_salts(self, keep: str) -> None:
        """Delete every salt but ``keep``'s: yesterday's visitors can no longer be linked."""
        self.db.execute("DELETE FROM salts WHERE day != ?", (keep,))

    # -- log positions ------------------------------------------------------------

    def log_files(self) -> list[LogFile]:
        rows = self.db.execute(
            "SELECT dev, ino, path, offset, state, head FROM log_files ORDER BY updated"
        ).fetchall()
        return [LogFile(int(d), int(i), str(p), int(o), s, h) for d, i, p, o, s, h in rows]

    def set_log_file(self, entry: LogFile) -> None:
        self.db.execute(
            "INSERT INTO log_files (dev, ino, path, offset, state, updated, head) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dev, ino) DO UPDATE SET "
            "path = excluded.path, offset = excluded.offset, state = excluded.state, "
            "updated = excluded.updated, head = excluded.head",
            (
                entry.dev,
                entry.ino,
                entry.path,
                entry.offset,
                entry.state,
                time.time(),
                entry.head,
            ),
        )

    def drop_log_file(self, dev: int, ino: int) -> None:
        self.db.execute("DELETE FROM log_files WHERE dev = ? AND ino = ?", (dev, ino))

    def forget_log_files(self, keep_after: float) -> None:
        self.db.execute(
            "DELETE FROM log_files WHERE state IN ('done', 'lost') AND updated < ?",
            (keep_after,),
        )

    # -- counting -----------------------------------------------------------------

    def commit(self, events: Iterable[Event], position: LogFile, counters: dict[str, int]) -> int:
        """Count ``events`` and move the file's position in one transaction.

        Returns how many visitors or conversions were new.
        """
        exposed: dict[tuple[str, str], list[tuple[str, int, int, str]]] = {}
        converted: list[tuple[str, int, int, str]] = []
        timed: list[Event] = []
        last_event: dict[str, tuple[float, str]] = {}
        late = 0
        added: Counter[tuple[str, str, str]] = Counter()  # (experiment, variant, kind)
        committed: list[tuple[str, int, int, str]] = []
        with self._tx() as db:
            compacted = self.meta("compacted_before") or ""
            for event in events:
                if event.day < compacted:
                    late += 1
                    continue
                key = (event.experiment, day_number(event.day), event.visitor, event.variant)
                if event.kind == "conversion":
                    converted.append(key)
                elif event.kind == "timing":
                    timed.append(event)
                    continue  # a beacon is not a page view: the experiment's activity
                else:
                    exposed.setdefault((event.experiment, event.variant), []).append(key)
                last_event[event.experiment] = (event.at, event.revision)
            for group, keys in exposed.items():
                fresh = [k for k in keys if k[2] not in self._known.get((k[0], k[1], k[3]), ())]
                # Sets: a row already there inserts nothing; the change count says what
                # was really new.
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO exposures VALUES (?, ?, ?, ?)", fresh)
                added[(*group, "visitors")] += db.total_changes - before
                committed.extend(fresh)
            if exposed and self._waiting:
                added.update(self._match_unexposed(db))
            for key in converted:
                if self._exposed(db, key):
                    before = db.total_changes
                    db.execute("INSERT OR IGNORE INTO conversions VALUES (?, ?, ?, ?)", key)
                    added[(key[0], key[3], "conversions")] += db.total_changes - before
                elif not db.execute(
                    "SELECT 1 FROM conversions WHERE experiment = ? AND day = ? AND visitor = ? "
                    "AND variant = ?",
                    key,
                ).fetchone():
                    db.execute("INSERT OR IGNORE INTO unexposed VALUES (?, ?, ?, ?)", key)
                    self._waiting = True
            if exposed and self._timings_waiting:
                timed = self._waiting_timings(db) + timed
            if timed:
                counters = {**counters}
                for reason, count in self._take_timings(db, timed).items():
                    counters[reason] = counters.get(reason, 0) + count
            for (experiment, variant, kind), count in added.items():
                if count:
                    db.execute(
                        f"INSERT INTO totals (experiment, variant, {kind}) VALUES (?, ?, ?) "  # noqa: S608 (kind is one of two names)
                        f"ON CONFLICT (experiment, variant) DO UPDATE SET "
                        f"{kind} = {kind} + excluded.{kind}",
                        (experiment, variant, count),
                    )
            for experiment, (at, revision) in last_event.items():
                db.execute(
                    "INSERT INTO experiments (name, revision, last_event_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET last_event_at = excluded.last_event_at",
                    (experiment, revision, at),
                )
            if late:
                counters = {**counters, "late": counters.get("late", 0) + late}
            for name, value in counters.items():
                if value:
                    db.execute(
                        "INSERT INTO counters (name, value) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                        (name, value),
                    )
            self.set_log_file(position)
        self._remember(committed)
        return sum(added.values())

    def _take_timings(self, db: sqlite3.Connection, events: list[Event]) -> Counter[str]:
        """Add the timings of exposed visitors' page views not taken yet to the sample;
        count the others by reason (counters ``timing_unexposed``, ``timing_capped``)."""
        skipped: Counter[str] = Counter()
        for event in events:
            assert event.timing is not None
            key = (event.experiment, day_number(event.day), event.visitor, event.variant)
            if not self._exposed(db, key):
                t = event.timing
                db.execute(
                    "INSERT OR IGNORE INTO timing_waiting VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*key, t.view, t.ttfb_ms, t.lcp_ms, t.transfer_bytes, t.age_ms),
                )
                self._timings_waiting = True
                continue
            views = db.execute(
                "SELECT COUNT(*) FROM timing_views WHERE experiment = ? AND day = ? "
                "AND visitor = ? AND variant = ?",
                key,
            ).fetchone()[0]
            if views >= TIMED_VIEWS_PER_VISITOR:
                skipped["timing_capped"] += 1
                continue
            before = db.total_changes
            db.execute(
                "INSERT OR IGNORE INTO timing_views VALUES (?, ?, ?, ?, ?)",
                (*key, event.timing.view),
            )
            if db.total_changes == before:
                continue  # this page view's beacon was read before
            slot = self._slot(db, "timing_seen", event.experiment, event.variant, TIMING_SAMPLES)
            if slot is not None:
                db.execute(
                    "INSERT INTO timings (experiment, variant, slot, ttfb, lcp, bytes) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (experiment, variant, slot) DO "
                    "UPDATE SET ttfb = excluded.ttfb, lcp = excluded.lcp, bytes = excluded.bytes",
                    (
                        event.experiment,
                        event.variant,
                        slot,
                        event.timing.ttfb_ms,
                        event.timing.lcp_ms,
                        event.timing.transfer_bytes,
                    ),
                )
        return skipped

    def _waiting_timings(self, db: sqlite3.Connection) -> list[Event]:
        """The waiting timings whose page view has now been read, taken out of waiting."""
        rows = db.execute(
            "SELECT w.experiment, w.day, w.visitor, w.variant, w.view, w.ttfb, w.lcp, w.bytes, "
            "w.age FROM timing_waiting w JOIN exposures e "
            "USING (experiment, day, visitor, variant)"
        ).fetchall()
        db.executemany(
            "DELETE FROM timing_waiting WHERE experiment = ? AND day = ? AND visitor = ? "
            "AND variant = ? AND view = ?",
            [row[:5] for row in rows],
        )
        self._timings_waiting = (
            db.execute("SELECT 1 FROM timing_waiting LIMIT 1").fetchone() is not None
        )
        events = []
        for experiment, day, visitor, variant, view, ttfb, lcp, size, age in rows:
            text = str(day)
            iso = f"{text[:4]}-{text[4:6]}-{text[6:]}"
            measured = Timing(int(view), float(ttfb), lcp, int(size), float(age))
            events.append(Event(experiment, "", iso, visitor, variant, "timing", 0.0, measured))
        return events

    def _slot(
        self, db: sqlite3.Connection, table: str, experiment: str, variant: str, size: int
    ) -> int | None:
        """Reservoir sampling (algorithm R): the slot the next value of ``size`` kept
        takes, or None if it is not kept; counts it as seen in ``table``."""
        row = db.execute(
            f"SELECT seen FROM {table} WHERE experiment = ? AND variant = ?",  # noqa: S608 (a table name of this module)
            (experiment, variant),
        ).fetchone()
        seen = int(row[0]) if row else 0
        db.execute(
            f"INSERT INTO {table} (experiment, variant, seen) VALUES (?, ?, 1) "  # noqa: S608
            "ON CONFLICT (experiment, variant) DO UPDATE SET seen = seen + 1",
            (experiment, variant),
        )
        slot = seen if seen < size else self._random.randrange(seen + 1)
        return slot if slot < size else None

    def _exposed(self, db: sqlite3.Connection, key: tuple[str, int, int, str]) -> bool:
        experiment, day, visitor, variant = key
        if visitor in self._known.get((experiment, day, variant), ()):
            return True
        return bool(
            db.execute(
                "SELECT 1 FROM exposures WHERE experiment = ? AND day = ? AND visitor = ? "
                "AND variant = ?",
                key,
            ).fetchone()
        )

    def _match_unexposed(self, db: sqlite3.Connection) -> Counter[tuple[str, str, str]]:
        """Count the waiting conversions whose exposure has now been read."""
        matched = db.execute(
            "SELECT u.experiment, u.day, u.visitor, u.variant FROM unexposed u JOIN exposures e "
            "USING (experiment, day, visitor, variant)"
        ).fetchall()
        added: Counter[tuple[str, str, str]] = Counter()
        for key in matched:
            before = db.total_changes
            db.execute("INSERT OR IGNORE INTO conversions VALUES (?, ?, ?, ?)", key)
            added[(key[0], key[3], "conversions")] += db.total_changes - before
        db.executemany(
            "DELETE FROM unexposed WHERE experiment = ? AND day = ? AND visitor = ? "
            "AND variant = ?",
            matched,
        )
        self._waiting = db.execute("SELECT 1 FROM unexposed LIMIT 1").fetchone() is not None
        return added

    def _remember(self, keys: list[tuple[str, int, int, str]]) -> None:
        """Keep the exposures just committed in memory (after the commit, never before)."""
        if self._known_size + len(keys) > KNOWN_VISITORS:
            self._known.clear()
            self._known_size = 0
        for experiment, day, visitor, variant in keys:
            known = self._known.setdefault((experiment, day, variant), set())
            if visitor not in known:
                known.add(visitor)
                self._known_size += 1

    def _forget_known(self, keep: Callable[[str, int], bool]) -> None:
        for key in [k for k in self._known if not keep(k[0], k[1])]:
            self._known_size -= len(self._known.pop(key))

    def compact(self, before_day: str) -> int:
        """Forget the visitor ids of days before ``before_day`` (their totals stay)."""
        cutoff = day_number(before_day)
        with self._tx() as db:
            removed = db.execute("DELETE FROM exposures WHERE day < ?", (cutoff,)).rowcount
            removed += db.execute("DELETE FROM conversions WHERE day < ?", (cutoff,)).rowcount
            removed += db.execute("DELETE FROM timing_views WHERE day < ?", (cutoff,)).rowcount
            # Timings whose page view was never read: not taken.
            lost = db.execute("DELETE FROM timing_waiting WHERE day < ?", (cutoff,)).rowcount
            if lost:
                db.execute(
                    "INSERT INTO counters (name, value) VALUES ('timing_unexposed', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    (lost,),
                )
            removed += lost
            # Conversions whose visitor was never seen on that variant that day: not counted.
            unexposed = db.execute("DELETE FROM unexposed WHERE day < ?", (cutoff,)).rowcount
            if unexposed:
                db.execute(
                    "INSERT INTO counters (name, value) VALUES ('unexposed', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    (unexposed,),
                )
            removed += unexposed
            if before_day > (self.meta("compacted_before") or ""):
                self.set_meta("compacted_before", before_day)
        self._forget_known(lambda _, day: day >= cutoff)
        return removed

    def totals(self, experiment: str) -> dict[str, VariantCounts]:
        rows = self.db.execute(
            "SELECT variant, visitors, conversions FROM totals WHERE experiment = ?",
            (experiment,),
        )
        return {str(v): VariantCounts(int(n), int(c)) for v, n, c in rows}

    def visitor_ids(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM exposures").fetchone()[0])

    # -- experiments and reports --------------------------------------------------

    def register(self, name: str, uid: str | None, revision: str) -> bool:
        """Record the deployed revision; a new uid under a known name starts afresh.

        Returns True when the counts were reset.
        """
        with self._tx() as db:
            row = db.execute("SELECT uid FROM experiments WHERE name = ?", (name,)).fetchone()
            reset = row is not None and uid is not None and row[0] not in (None, uid)
            if reset:
                for table in (
                    "totals",
                    "exposures",
                    "conversions",
                    "latencies",
                    "latency_seen",
                    "timing_views",
                    "timing_waiting",
                    "timings",
                    "timing_seen",
                ):
                    db.execute(f"DELETE FROM {table} WHERE experiment = ?", (name,))  # noqa: S608
                db.execute("UPDATE experiments SET built = NULL WHERE name = ?", (name,))
                self._forget_known(lambda experiment, _: experiment != name)
            db.execute(
                "INSERT INTO experiments (name, uid, revision) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, "
                "uid = COALESCE(excluded.uid, experiments.uid)",
                (name, uid, revision),
            )
        return reset

    def experiment_names(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute("SELECT name FROM experiments ORDER BY name")]

    def experiment_row(self, name: str) -> dict[str, Any]:
        self.db.row_factory = sqlite3.Row
        try:
            row = self.db.execute("SELECT * FROM experiments WHERE name = ?", (name,)).fetchone()
        finally:
            self.db.row_factory = None
        return dict(row) if row is not None else {}

    def prepare_report(
        self, name: str, content: dict[str, Any], *, again: bool = False
    ) -> PendingReport | None:
        """Give ``content`` (revision and variants) a new sequence if it changed (or if
        ``again``, unless a report is still pending).

        The report is stored as pending before anyone sends it.
        """
        text = json.dumps(content, sort_keys=True)
        with self._tx() as db:
            row = db.execute(
                "SELECT sequence, built FROM experiments WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                db.execute("INSERT INTO experiments (name) VALUES (?)", (name,))
                sequence, built = 0, None
            else:
                sequence, built = int(row[0]), row[1]
            pending = row is not None and self._pending(name)
            if built == text and (not again or pending):
                return None
            sequence += 1
            payload = {
                "experiment": name,
                "incarnation": self.incarnation,
                "sequence": sequence,
                **content,
            }
            db.execute(
                "UPDATE experiments SET sequence = ?, built = ?, pending_sequence = ?, "
                "pending_payload = ? WHERE name = ?",
                (sequence, text, sequence, json.dumps(payload), name),
            )
        return PendingReport(name, sequence, payload)

    def _pending(self, name: str) -> bool:
        row = self.db.execute(
            "SELECT pending_sequence FROM experiments WHERE name = ?", (name,)
        ).fetchone()
        return row is not None and row[0] is not None

    def pending_reports(self) -> list[PendingReport]:
        rows = self.db.execute(
            "SELECT name, pending_sequence, pending_payload FROM experiments "
            "WHERE pending_sequence IS NOT NULL ORDER BY name"
        )
        return [PendingReport(str(n), int(s), json.loads(p)) for n, s, p in rows]

    def report_done(self, name: str, sequence: int, error: str | None = None) -> None:
        """The intake accepted ``sequence`` (or refused it for good, with ``error``)."""
        with self._tx() as db:
            if error is None:
                db.execute(
                    "UPDATE experiments SET acked_sequence = MAX(COALESCE(acked_sequence, 0), ?),"
                    " reported_at = ?, last_error = NULL WHERE name = ?",
                    (sequence, time.time(), name),
                )
            else:
                db.execute("UPDATE experiments SET last_error = ? WHERE name = ?", (error, name))
            db.execute(
                "UPDATE experiments SET pending_sequence = NULL, pending_payload = NULL "
                "WHERE name = ? AND pending_sequence = ?",
                (name, sequence),
            )

    def report_failed(self, name: str, error: str) -> None:
        """A report could not be delivered yet; it stays pending."""
        self.db.execute("UPDATE experiments SET last_error = ? WHERE name = ?", (error, name))

    # -- latencies ----------------------------------------------------------------

    def add_latency(self, experiment: str, variant: str, ms: float) -> None:
        """Keep a uniform sample of every latency seen (reservoir sampling, algorithm R)."""
        with self._tx() as db:
            slot = self._slot(db, "latency_seen", experiment, variant, LATENCY_SAMPLES)
            if slot is not None:
                db.execute(
                    "INSERT INTO latencies (experiment, variant, slot, ms) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (experiment, variant, slot) DO UPDATE SET ms = excluded.ms",
                    (experiment, variant, slot, ms),
                )

    def latencies(self, experiment: str) -> dict[str, list[float]]:
        result: dict[str, list[float]] = {}
        for variant, ms in self.db.execute(
            "SELECT variant, ms FROM latencies WHERE experiment = ? ORDER BY variant, slot",
            (experiment,),
        ):
            result.setdefault(str(variant), []).append(float(ms))
        return result

    def timed_views(self, experiment: str) -> dict[str, int]:
        """Page views timed per variant, in all."""
        try:
            rows = self.db.execute(
                "SELECT variant, seen FROM timing_seen WHERE experiment = ?", (experiment,)
            ).fetchall()
        except sqlite3.OperationalError:  # read-only, from an agent before timings
            return {}
        return {str(v): int(n) for v, n in rows}

    def timings(self, experiment: str, limit: int = TIMING_SAMPLES) -> dict[str, TimingSample]:
        """Each variant's real-user timings: the kept sample, or a uniform subset of
        ``limit`` page views of it (the same subset while nothing new is taken, so an
        unchanged sample makes an unchanged report)."""
        result: dict[str, TimingSample] = {}
        rows: dict[str, list[tuple[float, float | None, int]]] = {}
        for variant, ttfb, lcp, size in self.db.execute(
            "SELECT variant, ttfb, lcp, bytes FROM timings WHERE experiment = ? "
            "ORDER BY variant, slot",
            (experiment,),
        ):
            rows.setdefault(str(variant), []).append(
                (float(ttfb), None if lcp is None else float(lcp), int(size))
            )
        for variant, views in self.timed_views(experiment).items():
            kept = rows.get(variant, [])
            if len(kept) > limit:
                chosen = sorted(random.Random(views).sample(range(len(kept)), limit))  # noqa: S311
                kept = [kept[i] for i in chosen]
            result[variant] = TimingSample(
                views,
                [ttfb for ttfb, _, _ in kept],
                [lcp for _, lcp, _ in kept if lcp is not None],
                [size for _, _, size in kept],
            )
        return result
