"""The agent's parts one at a time: shares, the manifest's checks, the log classifier, the
store's exactly-once counting and nginx's acceptance of the rendered configuration.
Only the last test starts a process (``nginx -t``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from smart_agent import store as store_module
from smart_agent.counting import Counting
from smart_agent.deploy import ExperimentManifest, fragment_problem, install_revision, scan
from smart_agent.logreader import _PLAIN_LINE, LOG_KEYS, classify, parse_line
from smart_agent.nginx import ID_BUCKETS, Nginx, ServePlan, render_config, split_parts
from smart_agent.reporter import Outcome, Reporter
from smart_agent.settings import AgentSettings
from smart_agent.store import Event, EventKind, LogFile, Store
from smart_operator.intake.schema import ResultsReport
from smart_sim.bench.agent import landing_experiment

MANIFEST = {
    "name": "homepage-headline",
    "type": "landing_page",
    "revision": "r1",
    "variants": [{"name": "control", "weight": 50}, {"name": "b", "weight": 50}],
    "goalUrl": "https://buy.stripe.com/test_acme",
}


def test_shares_follow_the_weights_in_hundredths_of_a_percent() -> None:
    assert split_parts([("a", 50), ("b", 30), ("c", 20)]) == [("a", 5000), ("b", 3000), ("c", 2000)]
    assert sum(units for _, units in split_parts([("a", 1), ("b", 1), ("c", 1)])) == 10_000
    assert split_parts([("a", 1000), ("b", 0), ("c", 1)]) == [("a", 9990), ("c", 10)]
    assert len(ID_BUCKETS) == 256 and sum(units for _, units in ID_BUCKETS) == 10_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"goalUrl": 'https://x.example/"; return 200 "owned'}, "goalUrl"),
        ({"goalUrl": "https://x.example/$host"}, "goalUrl"),
        ({"goalUrl": "http://buy.stripe.com/x"}, "goalUrl"),
        ({"serving": {"mode": "winner", "winner": "nobody"}}, "winner"),
        ({"variants": [{"name": "a", "weight": 0}]}, "weight above 0"),
        ({"name": "Bad Name"}, "name"),
        ({"color": "red"}, "color"),
    ],
)
def test_a_manifest_that_could_break_nginx_is_refused(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ExperimentManifest.model_validate({**MANIFEST, **change})


def test_fragments_from_the_operator_pass_and_dangerous_ones_do_not() -> None:
    from smart_operator.models.experiment import ExperimentSpec
    from smart_operator.templates.catalog import TemplateName, builtin
    from smart_operator.templates.render import render_experiment

    spec = ExperimentSpec.model_validate(
        {
            "domainRef": "d",
            "type": "performance",
            "template": "cache_optimization",
            "goal": {"metric": "p95_latency"},
            "variants": [{"name": "control"}, {"name": "b"}],
        }
    )
    for rendered in render_experiment(spec, builtin(TemplateName.CACHE_OPTIMIZATION)).values():
        assert rendered.nginx_conf and fragment_problem(rendered.nginx_conf) is None
    assert fragment_problem("include /etc/shadow;") is not None
    assert fragment_problem("location /_smart/convert { }") is not None
    assert fragment_problem("location /assets/ {") is not None


def line(**fields: str) -> str:
    entry = {
        "e": "exp",
        "r": "r1",
        "d": "2026-11-26",
        "mode": "split",
        "t": "1795700000.000",
        "id": "0011223344556677",
        "v": "control",
        "cv": "",
        "m": "GET",
        "u": "/index.html",
        "s": "200",
        "ct": "text/html; charset=utf-8",
        "b": "0",
        "p": "0",
        "rum": "",
    }
    return json.dumps({**entry, **fields}, separators=(",", ":"))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "exposure"),
        ({"s": "304"}, "exposure"),
        ({"u": "/_smart/convert", "m": "POST", "cv": "b", "s": "303", "ct": ""}, "conversion"),
        ({"u": "/_smart/convert", "m": "POST", "cv": "zzz", "s": "303"}, "unknown_variant"),
        ({"u": "/_smart/convert", "m": "POST", "cv": "b", "s": "302"}, "cross_site"),
        ({"u": "/_smart/convert", "m": "GET", "cv": "b", "s": "302"}, "method"),  # a link
        ({"u": "/_smart/convert", "m": "POST", "cv": "b", "s": "404"}, "other"),
        ({"b": "1"}, "bot"),
        ({"p": "1"}, "prefetch"),
        ({"m": "HEAD"}, "method"),
        ({"mode": "control"}, "not_randomised"),
        ({"s": "404"}, "other"),
        ({"u": "/assets/site.css", "ct": "text/css"}, "other"),
    ],
)
def test_log_lines_are_classified(fields: dict[str, str], reason: str) -> None:
    event, why = classify(line(**fields), lambda e, r: ("control", "b"))
    assert why == reason
    assert (event is not None) == (reason in ("exposure", "conversion"))
    if reason == "conversion":
        assert event is not None and event.variant == "b"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"u": '/say-"hi"/index.html'},  # nginx escapes the quotes: the json.loads path
        {"u": "/back\\slash/", "cv": "\u00e9t\u00e9"},
        {"t": "1795700000.125", "cv": "b"},
    ],
)
def test_both_ways_of_reading_a_line_agree_with_json(fields: dict[str, str]) -> None:
    text = line(**fields)
    assert parse_line(text) == tuple(json.loads(text)[key] for key in LOG_KEYS)


@pytest.mark.parametrize(
    "text", ["not json", "[1, 2]", '{"e":"exp"}', line()[:-1], line().replace('"r":', '"x":')]
)
def test_a_line_that_is_not_the_agents_format_is_malformed(text: str) -> None:
    assert classify(text + '"ct":"text/html', lambda e, r: None) == (None, "malformed")


def test_the_log_format_nginx_writes_is_read_by_the_fast_path(tmp_path: Path) -> None:
    """The reader's regular expression matches what nginx's ``log_format`` writes (else
    every line would take the slower ``json.loads`` path)."""
    settings = AgentSettings(root=tmp_path, listen="127.0.0.1:18080")
    manifest, files = landing_experiment()
    install_revision(settings.experiments_dir, manifest, files)
    deployment = scan(settings.experiments_dir).deployments[manifest.name]
    text = render_config(settings, ServePlan(deployment, "2026-11-26", "ab" * 32))
    template = text.split("log_format smart escape=json '", 1)[1].split("';", 1)[0]
    written = re.sub(r"\$[a-z_0-9]+", "x", template)  # every variable, as nginx fills it
    assert _PLAIN_LINE.fullmatch(written) is not None, written


def test_counting_is_idempotent_and_forgets_ids_of_finished_days(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    position = LogFile(1, 2, "access.log", 100, "active")
    seen = Event("exp", "r1", "2026-11-25", 1, "control", "exposure", 0.0)
    shown_b = Event("exp", "r1", "2026-11-25", -2, "b", "exposure", 0.0)
    converted = Event("exp", "r1", "2026-11-25", -2, "b", "conversion", 0.0)
    assert store.commit([seen, shown_b, converted], position, {}) == 3
    assert store.commit([seen, converted, seen], position, {}) == 0  # read again: nothing
    totals = {v: (c.visitors, c.conversions) for v, c in store.totals("exp").items()}
    assert totals == {"control": (1, 0), "b": (1, 1)}
    assert store.compact(before_day="2026-11-26") == 3
    assert store.visitor_ids() == 0
    assert store.commit([seen], position, {}) == 0  # a late line for a forgotten day
    assert store.counters()["late"] == 1
    assert {v: c.visitors for v, c in store.totals("exp").items()} == {"control": 1, "b": 1}

    first = store.prepare_report("exp", {"revision": "r1", "variants": []})
    assert first is not None and first.sequence == 1
    assert store.prepare_report("exp", {"revision": "r1", "variants": []}) is None
    store.close()
    reopened = Store(tmp_path / "agent.db")  # a restart keeps sequence and pending report
    assert [p.sequence for p in reopened.pending_reports()] == [1]
    second = reopened.prepare_report("exp", {"revision": "r2", "variants": []})
    assert second is not None and second.sequence == 2
    reopened.close()


def test_reports_name_the_counts_database_they_come_from(tmp_path: Path) -> None:
    """Every report carries the incarnation made with the counts database: the same
    after a restart, another for a new database (a replaced server starts again at
    sequence 1 and zero counts, which the intake must add, not take for a replay), one
    made for a database from before the id; and the intake's schema takes it."""
    content = {"revision": "r1", "variants": [{"name": "control", "visitors": 0, "conversions": 0}]}
    store = Store(tmp_path / "agent.db")
    first = store.prepare_report("exp", content)
    assert first is not None
    made = first.payload["incarnation"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    store.close()
    reopened = Store(tmp_path / "agent.db")
    again = reopened.prepare_report("exp", content | {"revision": "r2"})
    assert again is not None and again.payload["incarnation"] == made
    assert Store(tmp_path / "agent.db", readonly=True).incarnation == made
    # A database of an agent from before the id: it gets one, kept from then on.
    reopened.db.execute("DELETE FROM meta WHERE key = 'incarnation'")
    reopened.close()
    upgraded = Store(tmp_path / "agent.db")
    assert upgraded.incarnation not in ("", made)
    upgraded.close()

    replaced = Store(tmp_path / "new-server" / "agent.db")
    fresh = replaced.prepare_report("exp", content)
    assert fresh is not None and fresh.sequence == 1
    assert fresh.payload["incarnation"] != made
    report = ResultsReport.model_validate(fresh.payload)
    assert report.incarnation == fresh.payload["incarnation"]
    replaced.close()


def test_a_conversion_counts_only_for_a_visitor_exposed_to_that_variant_that_day(
    tmp_path: Path,
) -> None:
    """A conversion without an exposure to its variant on its salt day is not counted:
    not for another variant the visitor never saw, not for a visitor never seen, not
    for yesterday's exposure. One whose exposure is read later (two log files read out
    of order, across a restart) is counted then, once."""
    store = Store(tmp_path / "agent.db")
    position = LogFile(1, 2, "access.log", 100, "active")
    day, next_day = "2026-11-25", "2026-11-26"

    def event(visitor: int, variant: str, kind: EventKind, on: str = day) -> Event:
        return Event("exp", "r1", on, visitor, variant, kind, 0.0)

    assert store.commit([event(1, "control", "exposure")], position, {}) == 1
    forged = [
        event(1, "b", "conversion"),  # saw the control, claims b
        event(2, "b", "conversion"),  # never seen
        event(1, "control", "conversion", on=next_day),  # seen yesterday
    ]
    assert store.commit(forged, position, {}) == 0
    early = event(3, "b", "conversion")  # read before its exposure
    assert store.commit([early, early], position, {}) == 0
    store.close()
    store = Store(tmp_path / "agent.db")  # what waits survives a restart
    assert store.commit([event(3, "b", "exposure")], position, {}) == 2  # visitor + conversion
    assert store.commit([event(3, "b", "exposure"), early], position, {}) == 0
    assert store.commit([event(1, "control", "conversion")], position, {}) == 1
    totals = {v: (c.visitors, c.conversions) for v, c in store.totals("exp").items()}
    assert totals == {"control": (1, 1), "b": (1, 1)}
    # Once their day is over, the conversions that never met an exposure are dropped
    # and said so.
    store.compact(before_day="2026-11-27")
    assert store.counters()["unexposed"] == 3
    assert store.commit([event(1, "b", "exposure")], position, {"late": 0}) == 0  # late
    assert {v: c.conversions for v, c in store.totals("exp").items()} == {"control": 1, "b": 1}
    store.close()


def test_visitors_remembered_in_memory_never_hide_a_count_sqlite_would_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeat views skip sqlite through an in-memory set; whatever clears the table
    (a new uid, a compaction) or the set (its bound) must clear what it remembers."""
    monkeypatch.setattr(store_module, "KNOWN_VISITORS", 3)
    store = Store(tmp_path / "agent.db")
    position = LogFile(1, 2, "access.log", 100, "active")

    def views(*visitors: int, day: str = "2026-11-25") -> list[Event]:
        return [Event("exp", "r1", day, v, "control", "exposure", 0.0) for v in visitors]

    assert store.commit(views(1, 2, 1), position, {}) == 2
    assert store.commit(views(1, 2, 3, 4, 5), position, {}) == 3  # past the bound
    assert store.commit(views(*range(1, 6)), position, {}) == 0
    assert store.register("exp", "uid-1", "r1") is False
    assert store.register("exp", "uid-2", "r1") is True  # re-created: counts start afresh
    assert store.commit(views(1, 2), position, {}) == 2
    assert store.compact(before_day="2026-11-26") == 2
    assert store.commit(views(1, 2, day="2026-11-26"), position, {}) == 2
    assert store.commit(views(1, 2, day="2026-11-26"), position, {}) == 0
    assert {v: c.visitors for v, c in store.totals("exp").items()} == {"control": 4}
    store.close()


def test_intake_answers_decide_between_retry_and_drop(tmp_path: Path) -> None:
    settings = AgentSettings(root=tmp_path, report_seconds=60, backoff_max_seconds=300)
    reporter = Reporter(settings, Store(tmp_path / "db"), "2026-11-26T00:00:00Z")
    from smart_agent.reporter import _Retry

    retry = _Retry(attempts=1)
    assert reporter._retry_delay(Outcome(0), retry) is not None  # connection error
    assert reporter._retry_delay(Outcome(503, retry_after=7.0), retry) == 7.0
    assert reporter._retry_delay(Outcome(429), retry) is not None
    assert reporter._retry_delay(Outcome(401), retry) == 300
    assert reporter._retry_delay(Outcome(422), retry) == 60
    for refused in (400, 403, 409, 413, 415):
        assert reporter._retry_delay(Outcome(refused), retry) is None
    delays = [reporter.backoff(n) for n in range(1, 12)]
    assert delays[0] <= settings.backoff_base_seconds and max(delays) <= 300


async def test_the_count_loop_lets_the_other_loops_run_while_a_rotated_log_drains(
    tmp_path: Path,
) -> None:
    """A rotated log is read on for the grace time; meanwhile reports, heartbeats and the
    control socket (the same event loop) must go on, not wait for the grace to end."""
    settings = AgentSettings(root=tmp_path, rotation_grace_seconds=2.0, poll_seconds=0.05)
    settings.access_log.parent.mkdir(parents=True)
    settings.access_log.write_bytes(b"")
    store = Store(settings.db_path)
    counting = Counting(settings, store, Nginx(settings), time.time)
    counting.restore()
    settings.access_log.rename(settings.access_log.with_name("access.log.1"))
    settings.access_log.write_bytes(b"")  # nginx reopened: the old file drains now
    stop = asyncio.Event()
    loop = asyncio.create_task(counting.run(stop))
    gaps = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - before)
        states = [f["state"] for f in counting.follower.describe()]
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        counting.close()
        store.close()
    assert max(gaps) < 0.5, f"the event loop was held for {max(gaps):.2f} s"
    assert "draining" in states  # still within the grace: what was measured


async def test_nginx_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    settings = AgentSettings(root=tmp_path, listen="127.0.0.1:18080")
    manifest, files = landing_experiment()
    install_revision(settings.experiments_dir, manifest, files)
    deployment = scan(settings.experiments_dir).deployments[manifest.name]
    text = render_config(settings, ServePlan(deployment, "2026-11-26", "ab" * 32))
    assert "$remote_addr" not in text.split("log_format", 1)[1].split(";", 1)[0]
    assert "$http_user_agent" not in text.split("log_format", 1)[1].split(";", 1)[0]
    await asyncio.wait_for(Nginx(settings).test(text), 30)  # raises with nginx's words
