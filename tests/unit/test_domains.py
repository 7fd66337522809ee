"""Domain logic as pure functions: names, records, zones, phases and keys. (The user-data
is tested in ``tests/boot``, with cloud-init and on a booted server.)"""

from __future__ import annotations

from typing import Any

from smart_operator import domains
from smart_operator.conditions import set_condition
from smart_operator.keys import (
    derive_server_keys,
    fingerprint,
    generate_intake_key,
    generate_ssh_key,
    hash_intake_key,
)
from smart_operator.models.conditions import DOMAIN_CONDITIONS
from smart_operator.models.domain import Domain, DomainPhase, DomainStatus, ServerStatus


def domain(name: str = "shop", namespace: str = "customer-acme", **spec: Any) -> Domain:
    return Domain.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": "u-1", "generation": 1},
            "spec": {"domain": "shop.example", **spec},
        }
    )


def test_cloud_names_are_derived_valid_hostnames() -> None:
    assert domains.cloud_name(domain()) == "ss-customer-acme-shop"
    long = domains.cloud_name(domain(name="x" * 60, namespace="customer-" + "y" * 50))
    assert len(long) <= 63
    assert long == domains.cloud_name(domain(name="x" * 60, namespace="customer-" + "y" * 50))
    assert long != domains.cloud_name(domain(name="x" * 61, namespace="customer-" + "y" * 50))


def test_records_cover_apex_and_www_unless_switched_off() -> None:
    records = domains.desired_records(domain(), "127.10.0.2", "2001:db8::1")
    assert {(r.type, r.name) for r in records} == {
        ("A", "shop.example"),
        ("AAAA", "shop.example"),
        ("A", "www.shop.example"),
        ("AAAA", "www.shop.example"),
    }
    assert domains.desired_records(domain(dns={"www": False}), "127.10.0.2", None) == [
        domains.DesiredRecord("A", "shop.example", "127.10.0.2")
    ]
    assert domains.desired_records(domain(dns={"manage": False}), "127.10.0.2", None) == []


def test_phase_follows_the_conditions() -> None:
    conditions = set_condition([], "Verified", "False", "ZonePending", "set nameservers", 1)
    phase, with_ready = domains.phase_and_ready(conditions, 1)
    assert phase is DomainPhase.VERIFYING
    ready = next(c for c in with_ready if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "ZonePending")
    for kind in DOMAIN_CONDITIONS:
        conditions = set_condition(conditions, kind, "True", "Fine", "", 1)
    phase, with_ready = domains.phase_and_ready(conditions, 1)
    assert phase is DomainPhase.READY
    conditions = set_condition(conditions, "ServerReady", "False", "InvalidSpec", "bad type", 1)
    assert domains.phase_and_ready(conditions, 1)[0] is DomainPhase.FAILED


def test_server_keys_derive_from_the_attempt_alone() -> None:
    first = derive_server_keys(b"s" * 32, "uid-1", "a" * 16)
    again = derive_server_keys(b"s" * 32, "uid-1", "a" * 16)
    # The same key pair (its OpenSSH text carries a random check number, not a new key).
    assert (again.host.public, again.intake) == (first.host.public, first.intake)
    assert first.intake.startswith("ssk_") and len(first.intake) > 40
    for other in (
        derive_server_keys(b"s" * 32, "uid-1", "b" * 16),
        derive_server_keys(b"s" * 32, "uid-2", "a" * 16),
        derive_server_keys(b"t" * 32, "uid-1", "a" * 16),
    ):
        assert other.host.public != first.host.public and other.intake != first.intake


def test_keys() -> None:
    pair = generate_ssh_key("root@x")
    assert pair.public.startswith("ssh-ed25519 ") and pair.public.endswith(" root@x")
    assert "OPENSSH PRIVATE KEY" in pair.private
    assert fingerprint(pair.public).startswith("SHA256:")
    key = generate_intake_key()
    assert key.startswith("ssk_") and len(key) > 40
    assert hash_intake_key(key) == hash_intake_key(key) != hash_intake_key(generate_intake_key())


UID = "u-1"
MARK = domains.record_marker("inst-1", UID) + " Domain customer-acme/shop"


def existing(id: str, type: str, name: str, content: str, ours: bool = True) -> Any:
    return domains.ExistingRecord(id, type, name, content, (), MARK if ours else "by hand")


def test_a_record_is_ours_by_the_marker_in_its_comment_or_an_older_versions_tag() -> None:
    owner = domains.record_owner(MARK, ())
    assert owner == domains.RecordOwner("inst-1", UID)
    assert domains.record_owner(None, (domains.record_tag(UID),)) == domains.RecordOwner(None, UID)
    assert domains.record_owner("smartserver is great", ("team:web",)) is None
    assert domains.record_owner(None, ()) is None


def test_the_comment_fits_the_free_plan_and_keeps_the_marker() -> None:
    long = domain(name="a" * 60, namespace="customer-" + "b" * 50)
    free = domains.record_comment(long, "inst-1", "free")
    paid = domains.record_comment(long, "inst-1", "pro")
    assert len(free) <= 100 and len(paid) > 100
    assert domains.record_owner(free, ()) == domains.RecordOwner("inst-1", "u-1")
    assert not domains.plan_limits("free").tags and domains.plan_limits("business").tags


def test_zones_are_registrable_domains_and_a_subdomain_lives_in_its_parents() -> None:
    assert domains.registrable_domain("shop.example.com") == "example.com"
    assert domains.registrable_domain("a.b.co.uk") == "b.co.uk"
    assert domains.registrable_domain("co.uk") is None  # a public suffix: nobody owns it
    assert domains.zone_candidates("promo.shop.example.com") == [
        "promo.shop.example.com",
        "shop.example.com",
        "example.com",
    ]
    assert domains.zone_candidates("example.com") == ["example.com"]
    assert domains.zone_candidates("co.uk") == []


def test_record_plan_creates_what_is_missing() -> None:
    want = domains.desired_records(domain(), "127.10.0.2", None)
    plan = domains.plan_records(want, [], UID)
    assert plan.create == want
    assert not plan.update and not plan.delete and not plan.conflicts


def test_record_plan_corrects_ours_and_removes_duplicates_and_leftovers() -> None:
    want = domains.desired_records(domain(dns={"www": False}), "127.10.0.9", None)
    plan = domains.plan_records(
        want,
        [
            existing("a", "A", "shop.example", "127.10.0.2"),
            existing("b", "A", "shop.example", "127.10.0.2"),
            existing("c", "A", "www.shop.example", "127.10.0.2"),
        ],
        UID,
    )
    assert plan.update == [("a", want[0])]
    assert sorted(plan.delete) == ["b", "c"]
    assert not plan.create


def test_record_plan_never_touches_a_record_that_is_not_ours() -> None:
    want = domains.desired_records(domain(), "127.10.0.2", None)
    foreign = existing("x", "CNAME", "www.shop.example", "elsewhere.example", ours=False)
    plan = domains.plan_records(want, [foreign], UID)
    assert [w.name for w in plan.create] == ["shop.example"]
    assert "x" not in plan.delete and not plan.update
    assert plan.conflicts == [
        "CNAME www.shop.example → elsewhere.example exists and was not created by Smart Server"
    ]


def test_a_watched_copy_older_than_the_operators_last_pass_is_read_again() -> None:
    fresh = domain()
    steady = domain()
    conditions = set_condition([], "Verified", "True", "ZoneActive", "", 1)
    conditions = set_condition(conditions, "ServerReady", "True", "Running", "", 1)
    steady.status = DomainStatus(
        observed_generation=1, server=ServerStatus(id=7), conditions=conditions
    )
    # Left steady at generation 1 by the last pass: a copy that is not steady is behind.
    assert domains.watched_behind(fresh, steady_at=1)
    assert not domains.watched_behind(steady, steady_at=1)
    # A changed spec (a new generation), or no steady pass yet: the copy is current.
    assert not domains.watched_behind(fresh, steady_at=None)
    fresh.metadata.generation = 2
    assert not domains.watched_behind(fresh, steady_at=1)
