"""Real-user timings in the agent: the beacon's value, the wash-out, the log lines that
count, the store's once-per-page-view sample and nginx's acceptance of the locations.
Only the last test starts a process (``nginx -t``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from smart_agent import timing
from smart_agent.deploy import ExperimentManifest, install_revision, scan
from smart_agent.logreader import LOG_KEYS, classify, parse_line
from smart_agent.nginx import Nginx, ServePlan, render_config
from smart_agent.settings import AgentSettings
from smart_agent.store import TIMED_VIEWS_PER_VISITOR, Event, LogFile, Store
from smart_agent.timing import Timing, in_washout, parse
from smart_sim.bench.agent import performance_experiment

WINDOW = 3600
WASHOUT = 300
BEACON_AT = 1795698000.0 + 1200  # 20 minutes into a window (1795698000 starts one)


def test_the_beacon_value_is_read_and_implausible_ones_are_refused() -> None:
    assert parse("0a1b2c3d.120.850.48213.4100") == Timing(0x0A1B2C3D, 120.0, 850.0, 48213, 4100.0)
    assert parse("0a1b2c3d.120.-.48213.4100") == Timing(0x0A1B2C3D, 120.0, None, 48213, 4100.0)
    for bad in (
        "",
        "0a1b2c3d.120.850.48213",  # a field missing
        "0A1B2C3D.120.850.48213.4100",  # not the script's lower-case id
        "0a1b2c3d.-5.850.48213.4100",
        "0a1b2c3d.120.850.48213.4100&x=1",
        "0a1b2c3d.700000.850.48213.4100",  # a first byte after ten minutes
        "0a1b2c3d.120.850.99999999999.4100",  # beyond a gigabyte
    ):
        assert parse(bad) is None, bad


@pytest.mark.parametrize(
    ("seconds_into_window", "age_ms", "washed_out"),
    [
        (1200.0, 4000.0, False),  # loaded 20 minutes into the window
        (WASHOUT + 1.0, 500.0, False),  # loaded just after the wash-out
        (WASHOUT - 1.0, 0.0, True),  # loaded within the wash-out
        (WASHOUT + 10.0, 20_000.0, True),  # the beacon came late, the load was early
        (5.0, 10_000.0, True),  # loaded in the previous window (another variant)
    ],
)
def test_page_views_loaded_early_in_a_window_are_washed_out(
    seconds_into_window: float, age_ms: float, washed_out: bool
) -> None:
    start = 1795698000.0  # a multiple of the window
    assert start % WINDOW == 0
    beacon = start + seconds_into_window
    assert in_washout(beacon, age_ms, WINDOW, WASHOUT) is washed_out


def test_the_washout_defaults_to_a_tenth_of_the_window_and_fits_in_it() -> None:
    manifest, _, _ = performance_experiment(windowSeconds=60)
    assert manifest.performance is not None and manifest.performance.washout == 6
    manifest, _, _ = performance_experiment()
    assert manifest.performance is not None and manifest.performance.washout == 300
    with pytest.raises(ValueError, match="washoutSeconds must be shorter"):
        performance_experiment(windowSeconds=60, washoutSeconds=60)


def beacon(**fields: str) -> str:
    entry = {
        "e": "perf",
        "r": "p1",
        "d": "2026-11-26",
        "mode": "split",
        "t": f"{BEACON_AT:.3f}",
        "id": "0011223344556677",
        "v": "compressed",
        "cv": "",
        "m": "POST",
        "u": "/_smart/timing",
        "s": "204",
        "ct": "",
        "b": "0",
        "p": "0",
        "rum": "0a1b2c3d.120.850.48213.4100",
    }
    return json.dumps({**entry, **fields}, separators=(",", ":"))


def windows(experiment: str, revision: str) -> tuple[int, int] | None:
    return (WINDOW, WASHOUT) if experiment == "perf" else None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "timing"),
        ({"m": "GET", "s": "405"}, "method"),  # a link or an image tag
        ({"s": "403"}, "cross_site"),  # posted from another site's page
        ({"b": "1"}, "bot"),
        ({"p": "1"}, "prefetch"),
        ({"mode": "control"}, "not_randomised"),
        ({"rum": "1.2.3"}, "malformed_timing"),
        ({"e": "landing"}, "not_performance"),  # no windows: not a performance experiment
        ({"t": f"{BEACON_AT - 1200 + 100:.3f}", "rum": "0a1b2c3d.120.850.48213.50"}, "washout"),
        ({"id": "00112233"}, "other"),
    ],
)
def test_beacon_lines_are_classified(fields: dict[str, str], reason: str) -> None:
    event, why = classify(beacon(**fields), lambda e, r: ("control", "compressed"), windows)
    assert why == reason
    assert (event is not None) == (reason == "timing")
    if event is not None:
        assert event.kind == "timing" and event.variant == "compressed"
        assert event.timing == Timing(0x0A1B2C3D, 120.0, 850.0, 48213, 4100.0)


def test_lines_of_an_older_agent_without_the_timing_key_still_count() -> None:
    entry = json.loads(beacon(u="/index.html", m="GET", s="200", ct="text/html"))
    del entry["rum"]
    text = json.dumps(entry, separators=(",", ":"))
    assert parse_line(text)[LOG_KEYS.index("rum")] == ""
    event, why = classify(text, lambda e, r: ("control", "compressed"), windows)
    assert why == "exposure" and event is not None


def _timed(visitor: int, view: int, variant: str = "compressed", day: str = "2026-11-26") -> Event:
    return Event(
        "perf",
        "p1",
        day,
        visitor,
        variant,
        "timing",
        BEACON_AT,
        Timing(view, 100.0, 900.0, 40_000, 3000.0),
    )


def _seen(visitor: int, variant: str = "compressed", day: str = "2026-11-26") -> Event:
    return Event("perf", "p1", day, visitor, variant, "exposure", BEACON_AT)


def test_a_timing_counts_once_per_page_view_of_an_exposed_visitor(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    position = LogFile(1, 2, "access.log", 100, "active")
    # A beacon read before its page view (two nginx workers flush their buffers in
    # either order) waits for it; then both are read again: still one page view.
    store.commit([_timed(5, 1)], position, {})
    assert store.timed_views("perf") == {}
    store.commit([_seen(5)], position, {})
    assert store.timed_views("perf") == {"compressed": 1}
    store.commit([_seen(5), _timed(5, 1)], position, {})
    assert store.timed_views("perf") == {"compressed": 1}
    # A second page view of the same visitor is a second sample.
    store.commit([_timed(5, 2)], position, {})
    sample = store.timings("perf")["compressed"]
    assert sample.views == 2 and sample.ttfb_ms == [100.0, 100.0] and sample.lcp_ms == [900.0] * 2
    assert sample.transfer_bytes == [40_000, 40_000]
    # A browser without LCP still gives its first byte and size.
    no_lcp = _timed(5, 3)._replace(timing=Timing(3, 80.0, None, 1000, 100.0))
    store.commit([no_lcp], position, {})
    sample = store.timings("perf")["compressed"]
    assert (sample.views, len(sample.ttfb_ms), len(sample.lcp_ms)) == (3, 3, 2)
    # The visitor's totals are untouched by beacons: one visitor.
    assert store.totals("perf")["compressed"].visitors == 1
    # A beacon of a visitor never shown that variant that day: dropped with the day.
    store.commit([_timed(6, 9), _timed(5, 10, variant="control")], position, {})
    assert store.timed_views("perf") == {"compressed": 3}
    store.compact(before_day="2026-11-27")
    assert store.counters()["timing_unexposed"] == 2
    assert store.timed_views("perf") == {"compressed": 3}
    store.close()


def test_one_browser_cannot_fill_the_sample(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    position = LogFile(1, 2, "access.log", 100, "active")
    flood = [_timed(7, view) for view in range(TIMED_VIEWS_PER_VISITOR + 30)]
    store.commit([_seen(7), *flood], position, {})
    assert store.timed_views("perf") == {"compressed": TIMED_VIEWS_PER_VISITOR}
    assert store.counters()["timing_capped"] == 30
    store.close()


def test_page_view_ids_are_forgotten_with_the_day_and_the_sample_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smart_agent import store as store_module

    monkeypatch.setattr(store_module, "TIMING_SAMPLES", 5)
    store = Store(tmp_path / "agent.db")
    position = LogFile(1, 2, "access.log", 100, "active")
    events = [e for visitor in range(12) for e in (_seen(visitor), _timed(visitor, visitor))]
    store.commit(events, position, {})
    sample = store.timings("perf")["compressed"]
    assert sample.views == 12 and len(sample.ttfb_ms) == 5  # a reservoir of 5
    # A report sends a smaller subset where many variants share its size limit: the
    # same subset while nothing new arrives (an unchanged report is not sent again).
    subset = store.timings("perf", limit=3)["compressed"]
    assert len(subset.ttfb_ms) == len(subset.transfer_bytes) == 3 and subset.views == 12
    assert store.timings("perf", limit=3) == {"compressed": subset}
    assert store.compact(before_day="2026-11-27") == 24  # 12 visitor ids, 12 page views
    assert store.db.execute("SELECT COUNT(*) FROM timing_views").fetchone()[0] == 0
    assert store.timings("perf")["compressed"].views == 12  # the sample stays
    assert store.register("perf", "uid-2", "p1") is False  # first uid: nothing to reset
    assert store.register("perf", "uid-3", "p1") is True  # re-created: starts afresh
    assert store.timings("perf") == {}
    store.close()


def test_nginx_serves_the_script_and_logs_the_beacon_with_the_page_views_format(
    tmp_path: Path,
) -> None:
    settings = AgentSettings(root=tmp_path, listen="127.0.0.1:18080")
    manifest, files, fragments = performance_experiment()
    install_revision(settings.experiments_dir, manifest, files, fragments)
    deployment = scan(settings.experiments_dir).deployments[manifest.name]
    plan = ServePlan(deployment, "2026-11-26", "ab" * 32, active_variant="control")
    text = render_config(settings, plan)
    assert f"return 200 '{timing.SCRIPT}';" in text
    beacon_location = text.split("location = /_smart/timing {", 1)[1].split("\n        }", 1)[0]
    assert f'access_log "{settings.access_log}" smart' in beacon_location
    assert "if=" not in beacon_location  # every beacon is logged; the reader decides
    asyncio.run(asyncio.wait_for(Nginx(settings).test(text), 30))  # raises with nginx's words


def test_only_performance_experiments_get_the_timing_locations(tmp_path: Path) -> None:
    from smart_sim.bench.agent import landing_experiment

    settings = AgentSettings(root=tmp_path, listen="127.0.0.1:18080")
    manifest, files = landing_experiment()
    install_revision(settings.experiments_dir, manifest, files)
    deployment = scan(settings.experiments_dir).deployments[manifest.name]
    text = render_config(settings, ServePlan(deployment, "2026-11-26", "ab" * 32))
    assert timing.TIMING_PATH not in text and timing.SCRIPT_PATH not in text
    assert isinstance(manifest, ExperimentManifest)


def test_performance_pages_load_the_timing_script_and_landing_pages_do_not() -> None:
    from smart_sim.bench.agent import landing_experiment

    _, files, _ = performance_experiment()
    for variant in files.values():
        assert b'<script src="/_smart/timing.js" async></script>' in variant["index.html"]
    _, landing = landing_experiment()
    for variant in landing.values():
        assert b"/_smart/timing" not in variant["index.html"]
