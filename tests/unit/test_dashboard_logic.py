"""Pure parts of the dashboard: session cookies, the Wilson interval, the account to
customer mapping, the cache's scoped fan-out and chart history, and the words shown."""

from __future__ import annotations

import asyncio

import pytest

from smart_dashboard.charts import rate_chart
from smart_dashboard.cluster import Cache, customer_of_username
from smart_dashboard.present import chance_text, summarize, wilson
from smart_dashboard.sessions import Session, Signer
from smart_operator.models import Experiment

KEY = b"k" * 32


def test_session_round_trip_and_rejections() -> None:
    signer = Signer(KEY)
    cookie = signer.dump(Session.for_customer("acme", 60, now=1000.0))
    assert signer.load(cookie, now=1001.0) == Session("customer:acme", 1060.0)
    assert signer.load(cookie, now=1061.0) is None  # expired
    payload, mac = cookie.split(".")
    other = signer.dump(Session.for_admin(60, now=1000.0)).split(".")[0]
    for bad in (f"{other}.{mac}", f"{payload}.{mac[:-1]}", "x", "", "a.b.c", f"{payload}."):
        assert signer.load(bad, now=1001.0) is None
    assert Signer(b"z" * 32).load(cookie, now=1001.0) is None
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


def test_history_records_changes_and_thins() -> None:
    cache = Cache(history_points=10)
    ticks = iter(range(1000))
    cache.clock = lambda: float(next(ticks))
    for visitors in range(1, 40):
        cache.apply("experiments", "MODIFIED", [exp("customer-a", "e1", visitors, 10)])
        cache.apply("experiments", "MODIFIED", [exp("customer-a", "e1", visitors, 10)])  # same
    history = cache.history[("customer-a", "e1")]
    assert len(history) <= 10
    assert history[0].at == 0.0 and history[-1].counts[0][1] == 39
    svg = str(rate_chart(list(history), ["control", "bold"], "t <script>"))
    assert "<polyline" in svg and "<script>" not in svg and "&lt;script&gt;" in svg
    cache.apply("experiments", "DELETED", [exp("customer-a", "e1", 39, 10)])
    assert ("customer-a", "e1") not in cache.history


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
