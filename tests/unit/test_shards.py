"""Sharding (``shards``): which shard a customer's namespace falls in, the per-shard
peering object and finalizer, the hand-over of finalizers when the count changes, and
when kopf's peering lets a replica act; and the settings that name the shard."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from smart_operator import shards
from smart_operator.settings import OperatorSettings

NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def test_one_shard_takes_everything_and_keeps_the_old_names() -> None:
    assert {shards.shard_of(f"customer-c{i}", 1) for i in range(100)} == {0}
    assert shards.peering_name("smart-operator", 0, 1) == "smart-operator"
    assert shards.finalizer(0, 1) == "smartserver.ai/finalizer"


def test_a_namespace_has_one_shard_whatever_process_asks() -> None:
    # SHA-256, not hash(): the same in every process (PYTHONHASHSEED) and release. A
    # changed function would move Customers between shards on upgrade: pinned here.
    assert shards.shard_of("customer-acme", 4) == 2
    assert shards.shard_of("customer-globex", 4) == 0


def test_customers_spread_evenly_over_the_shards() -> None:
    counts = Counter(shards.shard_of(f"customer-c{i}", 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(900 < n < 1100 for n in counts.values()), counts


def test_every_shard_has_its_own_peering_object_and_finalizer() -> None:
    names = {shards.peering_name("smart-operator", i, 3) for i in range(3)}
    assert names == {f"smart-operator-shard-{i}" for i in range(3)}
    finalizers = {shards.finalizer(i, 3) for i in range(3)}
    assert finalizers == {f"smartserver.ai/finalizer-shard-{i}" for i in range(3)}


OLD = "smartserver.ai/finalizer"
OWN = "smartserver.ai/finalizer-shard-1"


def test_a_finalizer_left_by_an_old_count_goes_once_this_shards_is_on() -> None:
    # Before: only the old one; this shard's kopf adds its own first.
    assert shards.releasable([OLD], OWN, deleting=False) == []
    assert shards.releasable([OLD, OWN], OWN, deleting=False) == [OLD]
    # Another project's finalizers are never touched.
    assert shards.releasable(["example.com/keep", OWN], OWN, deleting=False) == []


def test_on_deletion_the_old_finalizer_waits_for_this_shards_clean_up() -> None:
    assert shards.releasable([OLD, OWN], OWN, deleting=True) == []
    assert shards.releasable([OLD, "example.com/keep"], OWN, deleting=True) == [OLD]


def peer(priority: int, seen: datetime = NOW, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_a_replica_acts_unless_a_live_peer_outranks_or_ties_it() -> None:
    assert shards.peering_active(None, "me", 1, NOW)
    assert shards.peering_active({"me": peer(1), "other": peer(0)}, "me", 1, NOW)
    assert not shards.peering_active({"me": peer(0), "other": peer(1)}, "me", 0, NOW)
    # kopf pauses every replica of one priority, so this one must not act either.
    assert not shards.peering_active({"me": peer(1), "other": peer(1)}, "me", 1, NOW)


def test_a_peer_past_its_lifetime_no_longer_counts() -> None:
    gone = peer(5, seen=NOW - timedelta(seconds=61))
    assert shards.peering_active({"me": peer(0), "old": gone}, "me", 0, NOW)
    assert not shards.peering_active({"me": peer(0), "old": peer(5)}, "me", 0, NOW)


def test_a_shard_outside_the_count_is_refused_with_the_fix() -> None:
    assert OperatorSettings(shards=3, shard=2).shard == 2
    with pytest.raises(ValidationError, match="set SMART_SHARD below SMART_SHARDS"):
        OperatorSettings(shards=2, shard=2)
