"""Pure parts of the dashboard: session cookies, the Wilson interval, the account to
customer mapping, the cache's scoped fan-out, the chart's points, and the words shown."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import pytest

from smart_dashboard.charts import chart_points, rate_chart
from smart_dashboard.cluster import Cache, customer_of_username
from smart_dashboard.present import chance_text, signed_pct, summarize, wilson
from smart_dashboard.sessions import Session, Signer
from smart_operator.models import Experiment

KEY = b"k" * 32


def test_session_round_trip_and_rejections() -> None:
    signer = Signer(KEY)
    cookie = signer.dump(Session.for_customer("acme", "uid-1", 60, now=1000.0))
    assert signer.load(cookie, now=1001.0) == Session("customer:acme", 1060.0, "uid-1")
    assert signer.load(cookie, now=1061.0) is None  # expired
    payload, mac = cookie.split(".")
    other = signer.dump(Session.for_admin(signer.fingerprint("t"), 60, now=1000.0)).split(".")[0]
    for bad in (f"{other}.{mac}", f"{payload}.{mac[:-1]}", "x", "", "a.b.c", f"{payload}."):
        assert signer.load(bad, now=1001.0) is None
    assert Signer(b"z" * 32).load(cookie, now=1001.0) is None
    # A cookie from before sessions named their credential is no session.
    legacy = base64.urlsafe_b64encode(b'{"sub":"customer:acme","exp":2000}').rstrip(b"=")
    legacy_payload = legacy.decode()
    assert signer.load(f"{legacy_payload}.{signer._mac(legacy_payload)}", now=1001.0) is None
    # The staff token's fingerprint is keyed and short, and differs per token.
    fingerprint = signer.fingerprint("staff-token")
    assert "staff" not in fingerprint and len(fingerprint) == 22
    assert fingerprint != signer.fingerprint("staff-token2")
    assert fingerprint != Signer(b"z" * 32).fingerprint("staff-token")
    with pytest.raises(ValueError, match="32 bytes"):
        Signer(b"short")


def test_wilson_interval() -> None:
    low, high = wilson(10, 100) or (0, 0)
    assert low == pytest.approx(0.0552, abs=1e-4) and high == pytest.approx(0.1744, abs=1e-4)
    assert wilson(0, 0) is None
    low, high = wilson(0, 50) or (1, 1)
    assert low == pytest.approx(0.0, abs=1e-12) and 0 < high < 0.1


def test_customer_of_username() -> None:
    assert customer_of_username("system:serviceaccount:customer-acme:dashboard-viewer") == "acme"
    for other in (
        "system:serviceaccount:customer-acme:default",
        "system:serviceaccount:kube-system:dashboard-viewer",
        "system:serviceaccount:customer-:dashboard-viewer",
        "admin",
        "system:serviceaccount:customer-a:dashboard-viewer:x",
    ):
        assert customer_of_username(other) is None


def exp(ns: str, name: str, visitors: int, needed: int | None) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": ns, "resourceVersion": str(visitors)},
        "spec": {
            "domainRef": "shop",
            "type": "landing_page",
            "template": "saas_landing",
            "variants": [{"name": "control"}, {"name": "bold"}],
        },
        "status": {
            "variants": [
                {"name": "control", "visitors": visitors, "conversions": visitors // 20},
                {
                    "name": "bold",
                    "visitors": visitors,
                    "conversions": visitors // 15,
                    "uplift": 0.33,
                    "upliftLow": 0.1,
                    "upliftHigh": 0.6,
                    "chanceToBeatControl": 0.97,
                },
            ],
            "statistics": {"visitorsNeeded": needed},
        },
    }


async def test_fan_out_is_scoped_and_bounded() -> None:
    cache = Cache(client_queue=2)
    a, b, staff = (
        cache.subscribe("customer-a"),
        cache.subscribe("customer-b"),
        cache.subscribe(None),
    )
    cache.apply("experiments", "ADDED", [exp("customer-a", "e1", 10, 100)])
    assert a.queue.qsize() == 1 and b.queue.qsize() == 0 and staff.queue.qsize() == 1
    cache.apply("customers", "ADDED", [{"metadata": {"name": "b"}}])
    assert b.queue.qsize() == 1 and a.queue.qsize() == 1
    for visitors in (20, 30):
        cache.apply("experiments", "MODIFIED", [exp("customer-a", "e1", visitors, 50)])
    assert a.dropped and a not in cache.subscribers  # too far behind: disconnected
    await asyncio.sleep(0)


def point(at: str, visitors: int) -> dict[str, object]:
    return {
        "at": at,
        "counts": [
            {"variant": "control", "visitors": visitors, "conversions": visitors // 20},
            {"variant": "bold", "visitors": visitors, "conversions": visitors // 15},
        ],
    }


def test_the_chart_draws_the_status_history_then_the_current_counts() -> None:
    raw = exp("customer-a", "e1", 900, 100)
    status = raw["status"]
    assert isinstance(status, dict)
    status["history"] = [point("2026-03-09T09:00:00Z", 300), point("2026-03-09T10:00:00Z", 600)]
    status["lastReportAt"] = "2026-03-09T10:05:00Z"
    experiment = Experiment.model_validate({"kind": "Experiment", **raw})
    now = datetime(2026, 3, 9, 11, tzinfo=UTC)
    points = chart_points(experiment, now)
    assert [(p.at.strftime("%H:%M"), p.counts[0].visitors) for p in points] == [
        ("09:00", 300),
        ("10:00", 600),
        ("10:05", 900),  # the current counts, newer than the last point
    ]
    # The intake just added the current counts as a point: no second point at that time.
    status["history"].append(point("2026-03-09T10:05:00Z", 900))
    same = chart_points(Experiment.model_validate({"kind": "Experiment", **raw}), now)
    assert len(same) == 3
    svg = str(rate_chart(points, ["control", "bold"], "t <script>"))
    assert svg.count("<polyline") == 2 and "09 Mar 09:00" in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_an_experiment_without_history_charts_its_current_counts() -> None:
    """An Experiment the intake wrote before it kept a history: one point, no line."""
    experiment = Experiment.model_validate(
        {"kind": "Experiment", **exp("customer-a", "e1", 900, 100)}
    )
    now = datetime(2026, 3, 9, 11, tzinfo=UTC)
    assert [p.at for p in chart_points(experiment, now)] == [now]
    svg = str(rate_chart(chart_points(experiment, now), ["control", "bold"], "t"))
    assert "<polyline" not in svg and svg.count("<circle") == 2


def test_not_enough_data_is_never_a_bare_percentage() -> None:
    waiting = summarize(
        Experiment.model_validate({"kind": "Experiment", **exp("n", "e", 100, 1740)})
    )
    bold = waiting.rows[1]
    assert bold.uplift.value is None and bold.chance.value is None
    assert bold.uplift.note == "Not enough data yet: about 1,740 more visitors"
    assert bold.rate.value == "6.0%" and bold.rate.interval is not None
    ready = summarize(Experiment.model_validate({"kind": "Experiment", **exp("n", "e", 5000, 0)}))
    assert ready.rows[1].uplift.value == "+33.0%"
    assert ready.rows[1].uplift.interval == "+10.0% to +60.0%"
    assert chance_text(0.998) == "> 99%" and chance_text(0.001) == "< 1%"


def test_an_enormous_interval_bound_is_shown_as_over_a_thousand_percent() -> None:
    assert signed_pct(0.382) == "+38.2%"
    assert signed_pct(-0.92, 0) == "\u221292%"
    assert signed_pct(28192.8) == "over +1,000%"
    assert signed_pct(9.5) == "+950.0%"


def test_an_uplift_the_data_cannot_yet_bound_from_above_says_so() -> None:
    """The intake leaves upliftHigh out while the always-valid interval is unbounded."""
    raw = exp("n", "e", 5000, 0)
    status = raw["status"]
    assert isinstance(status, dict)
    del status["variants"][1]["upliftHigh"]
    row = summarize(Experiment.model_validate({"kind": "Experiment", **raw})).rows[1]
    assert row.uplift.interval == "+10.0% to over +1,000%"


def test_the_availability_on_a_domain_card_says_when_a_site_is_down_and_why() -> None:
    from datetime import UTC, datetime, timedelta

    from smart_dashboard.present import availability, availability_pct
    from smart_operator.models import Domain

    assert availability_pct(None) == "\u2014" and availability_pct(100) == "100%"
    assert availability_pct(99.999) == "99.99%" and availability_pct(50) == "50.00%"
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    body = {
        "metadata": {"name": "shop", "namespace": "customer-acme"},
        "spec": {"domain": "shop.example"},
        "status": {
            "availability": {
                "up": False,
                "since": (now - timedelta(minutes=5)).isoformat(),
                "checkedAt": now.isoformat(),
                "consecutiveFailures": 7,
                "lastResult": "TCP: 192.0.2.1:443: Connection refused",
                "percent24h": 97.5,
                "percent30d": 99.9,
            }
        },
    }
    shown = availability(Domain.model_validate(body), now)
    assert shown is not None and not shown.up
    assert (shown.day, shown.month, shown.latency) == ("97.50%", "99.90%", "\u2014")
    assert shown.note == "down since 5 min ago: TCP: 192.0.2.1:443: Connection refused"
    del body["status"]
    assert availability(Domain.model_validate(body), now) is None
