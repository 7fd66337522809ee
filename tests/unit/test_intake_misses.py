"""Reports for Experiments the intake's cache does not hold: each costs at most one GET,
within budgets per Domain and overall, so made-up names cannot make the intake hammer
the API server; a name found missing is remembered briefly; and an Experiment created
meanwhile is found as soon as the watch brings it, or by a GET once that is due."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from smart_operator.intake.experiments import ExperimentCache
from smart_operator.intake.misses import MissBudget, MissLimits, Throttled
from smart_operator.intake.settings import IntakeSettings

NS = "customer-acme"
LIMITS = MissLimits(
    missing_seconds=5.0,
    per_domain_burst=5,
    per_domain_per_second=0.5,
    overall_burst=20,
    overall_per_second=10.0,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def experiment(name: str, namespace: str = NS) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {
            "domainRef": "acme-example",
            "type": "landing_page",
            "template": "saas_landing",
            "variants": [{"name": "control"}, {"name": "bold"}],
        },
    }


class Api:
    """Counts GETs; answers from ``objects``, after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.gets: list[tuple[str, str]] = []
        self.delay = delay

    async def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((namespace, name))
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.objects.get((namespace, name))


async def send(
    cache: ExperimentCache, api: Api, names: list[str], domain: str
) -> tuple[int, int, int]:
    """Look up each name as a report from ``domain``'s key would; (found, missing,
    throttled)."""
    found = missing = throttled = 0
    for name in names:
        try:
            view = await cache.lookup(NS, name, api.get_experiment, domain)
        except Throttled:
            throttled += 1
        else:
            if view is None:
                missing += 1
            else:
                found += 1
    return found, missing, throttled


def synced(clock: Clock, limits: MissLimits = LIMITS) -> ExperimentCache:
    cache = ExperimentCache(clock, limits)
    cache.apply("SYNC", [])
    return cache


async def test_distinct_unknown_names_from_one_key_cost_at_most_its_budget() -> None:
    clock, api = Clock(), Api()
    cache = synced(clock)
    names = [f"made-up-{i}" for i in range(1000)]
    key = "customer-acme/acme-example"
    _, missing, throttled = await send(cache, api, names, key)
    assert len(api.gets) == LIMITS.per_domain_burst
    assert (missing, throttled) == (LIMITS.per_domain_burst, 1000 - LIMITS.per_domain_burst)

    # Over the next T seconds, at most the refill: burst + rate * T in all.
    seconds = 60
    for step in range(seconds):
        clock.now += 1
        await send(cache, api, [f"more-{step}-{i}" for i in range(50)], key)
    assert len(api.gets) <= LIMITS.per_domain_burst + LIMITS.per_domain_per_second * seconds
    assert len(set(api.gets)) == len(api.gets), "no name was looked up twice"


async def test_all_keys_together_cost_at_most_the_overall_budget() -> None:
    clock, api = Clock(), Api()
    cache = synced(clock)
    seconds = 30
    for step in range(seconds + 1):
        for domain in range(100):
            await send(cache, api, [f"d{domain}-s{step}-{i}" for i in range(3)], f"ns/d{domain}")
        clock.now += 1
    assert len(api.gets) <= LIMITS.overall_burst + LIMITS.overall_per_second * seconds
    assert len(api.gets) >= LIMITS.overall_per_second * seconds  # the budget, not less


async def test_a_throttled_lookup_says_when_to_retry_and_spends_nothing() -> None:
    clock, api = Clock(), Api()
    budget = MissBudget(MissLimits(per_domain_burst=1, per_domain_per_second=0.25), clock)
    budget.take("a")
    with pytest.raises(Throttled) as refused:
        budget.take("a")
    assert refused.value.scope == "domain"
    assert refused.value.retry_after_seconds == 4
    clock.now += 2
    with pytest.raises(Throttled) as again:  # the refusal took nothing: 2 s still to go
        budget.take("a")
    assert again.value.retry_after_seconds == 2
    clock.now += 2
    budget.take("a")
    budget.take("b")  # another Domain has its own budget
    assert api.gets == []


async def test_a_name_found_missing_is_remembered_then_looked_up_again() -> None:
    clock, api = Clock(), Api()
    cache = synced(clock)
    assert await cache.lookup(NS, "ghost", api.get_experiment, "d") is None
    clock.now += LIMITS.missing_seconds - 0.1
    for _ in range(100):
        assert await cache.lookup(NS, "ghost", api.get_experiment, "d") is None
    assert len(api.gets) == 1
    clock.now += 0.2
    assert await cache.lookup(NS, "ghost", api.get_experiment, "d") is None
    assert len(api.gets) == 2


async def test_an_experiment_created_after_a_miss_is_found_once_the_watch_brings_it() -> None:
    """A real user creates an Experiment and its agent reports at once: a report that came
    before the watch event is answered as missing, the next one finds it without waiting
    for the remembered miss to expire, and without a GET."""
    clock, api = Clock(), Api()
    cache = synced(clock)
    assert await cache.lookup(NS, "launch", api.get_experiment, "d") is None
    cache.apply("ADDED", [experiment("launch")])
    view = await cache.lookup(NS, "launch", api.get_experiment, "d")
    assert view is not None and view.uid == "uid-launch"
    assert len(api.gets) == 1


async def test_an_experiment_the_watch_has_not_brought_is_found_by_a_get() -> None:
    """The watch lags (or is reconnecting): the GET finds the new Experiment, at once when
    the name was not looked up before, and after the remembered miss otherwise."""
    clock, api = Clock(), Api()
    cache = synced(clock)
    api.objects[(NS, "fresh")] = experiment("fresh")
    assert (await cache.lookup(NS, "fresh", api.get_experiment, "d")) is not None
    assert cache.get(NS, "fresh") is not None  # kept: the next report costs nothing
    await cache.lookup(NS, "fresh", api.get_experiment, "d")
    assert len(api.gets) == 1

    assert await cache.lookup(NS, "later", api.get_experiment, "d") is None
    api.objects[(NS, "later")] = experiment("later")
    clock.now += LIMITS.missing_seconds + 0.1
    assert (await cache.lookup(NS, "later", api.get_experiment, "d")) is not None


async def test_concurrent_lookups_of_one_name_share_one_get() -> None:
    clock, api = Clock(), Api(delay=0.05)
    cache = synced(clock)
    api.objects[(NS, "popular")] = experiment("popular")
    views = await asyncio.gather(
        *(cache.lookup(NS, "popular", api.get_experiment, f"d{i}") for i in range(50))
    )
    assert all(v is not None and v.name == "popular" for v in views)
    assert api.gets == [(NS, "popular")]


async def until_asked(api: Api, within: float = 5.0) -> None:
    """Wait, with a deadline, until the cache has sent its GET to the API."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not api.gets:
        assert loop.time() < deadline, "the cache never asked the API"
        await asyncio.sleep(0)


async def test_a_requester_that_goes_away_does_not_cancel_the_shared_get() -> None:
    clock, api = Clock(), Api(delay=0.05)
    cache = synced(clock)
    api.objects[(NS, "slow")] = experiment("slow")
    first = asyncio.create_task(cache.lookup(NS, "slow", api.get_experiment, "d"))
    second = asyncio.create_task(cache.lookup(NS, "slow", api.get_experiment, "d"))
    await until_asked(api)
    first.cancel()
    view = await second
    assert view is not None and len(api.gets) == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_lookups_in_flight_are_cancelled_when_the_intake_stops() -> None:
    clock, api = Clock(), Api(delay=10)
    cache = synced(clock)
    waiting = asyncio.create_task(cache.lookup(NS, "slow", api.get_experiment, "d"))
    await until_asked(api)
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_failed_get_reaches_every_requester_and_is_not_remembered() -> None:
    clock = Clock()
    calls = 0

    async def failing(namespace: str, name: str) -> dict[str, Any] | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("the API server is away")

    cache = synced(clock)
    results = await asyncio.gather(
        *(cache.lookup(NS, "x", failing, "d") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == 1
    with pytest.raises(ConnectionError):
        await cache.lookup(NS, "x", failing, "d")
    assert calls == 2


def test_the_remembered_misses_are_bounded() -> None:
    clock = Clock()
    budget = MissBudget(MissLimits(max_missing=100), clock)
    for i in range(1000):
        budget.missing((NS, f"n{i}"))
    assert len(budget) == 100
    assert budget.known_missing((NS, "n999")) and not budget.known_missing((NS, "n0"))


def test_the_domain_buckets_are_bounded() -> None:
    clock = Clock()
    budget = MissBudget(MissLimits(max_domains=10, overall_burst=10_000), clock)
    for i in range(1000):
        budget.take(f"d{i}")
    assert len(budget._domains) <= 10


def test_the_settings_make_the_limits() -> None:
    settings = IntakeSettings(
        missing_seconds=7,
        miss_lookups_per_domain_burst=3,
        miss_lookups_per_domain_per_second=0.1,
        miss_lookups_overall_burst=9,
        miss_lookups_overall_per_second=2,
    )
    assert settings.miss_limits == MissLimits(
        missing_seconds=7,
        per_domain_burst=3,
        per_domain_per_second=0.1,
        overall_burst=9,
        overall_per_second=2,
    )
