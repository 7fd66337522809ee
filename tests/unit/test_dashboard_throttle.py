"""Sign-in throttling: per client and overall token buckets, bounded memory, and which
address a request comes from behind a proxy."""

from __future__ import annotations

import ipaddress

from smart_dashboard.throttle import SignInThrottle, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_burst_then_one_try_per_interval() -> None:
    clock = Clock()
    throttle = SignInThrottle(5, 600, 1000, clock=clock)
    assert [throttle.attempt("a") for _ in range(5)] == [None] * 5
    refused = throttle.attempt("a")
    assert refused is not None and refused.scope == "client"
    assert refused.retry_after_seconds == 120  # 600 s / 5 tries
    assert throttle.attempt("b") is None  # another client is not held up
    clock.now += 119
    assert throttle.attempt("a") is not None  # refused attempts take nothing...
    clock.now += 1
    assert throttle.attempt("a") is None  # ...so the try comes exactly on time
    assert throttle.attempt("a") is not None


def test_all_clients_together_are_limited_too() -> None:
    clock = Clock()
    throttle = SignInThrottle(10, 600, 60, clock=clock)  # one a second overall
    assert all(throttle.attempt(f"10.0.0.{n}") is None for n in range(60))
    refused = throttle.attempt("10.0.1.1")
    assert refused is not None and refused.scope == "overall" and refused.retry_after_seconds == 1
    clock.now += 1
    assert throttle.attempt("10.0.1.1") is None


def test_memory_is_bounded_and_throttled_clients_are_kept_over_idle_ones() -> None:
    clock = Clock()
    throttle = SignInThrottle(2, 600, 100_000, clock=clock, max_clients=3)
    throttle.attempt("x")
    clock.now += 600  # x is whole again: forgetting it loses nothing
    for _ in range(2):
        throttle.attempt("guesser")
    throttle.attempt("y")
    throttle.attempt("z")  # a fourth client: room is made by dropping x, not the guesser
    assert set(throttle.clients) == {"guesser", "y", "z"}
    assert throttle.attempt("guesser") is not None
    for name in ("a", "b", "c", "d"):  # past the bound with no whole bucket: oldest go
        throttle.attempt(name)
    assert len(throttle.clients) == 3


def test_the_client_address_is_the_nearest_untrusted_one() -> None:
    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address("203.0.113.9", None, proxies) == "203.0.113.9"
    # Anyone may send X-Forwarded-For; only a trusted proxy's is believed.
    assert client_address("203.0.113.9", "198.51.100.1", proxies) == "203.0.113.9"
    assert client_address("10.1.2.3", "198.51.100.1", proxies) == "198.51.100.1"
    # The client's own entries (left of what the proxies added) are not believed.
    forged = "1.2.3.4, 198.51.100.1, 10.9.9.9"
    assert client_address("10.1.2.3", forged, proxies) == "198.51.100.1"
    assert client_address("10.1.2.3", "garbage", proxies) == "garbage"  # still one key
