"""The operator's SSH key rotation, in its pure parts: how the Secret's keys are read,
how a server's ``authorized_keys`` changes, and what a refusal says."""

from __future__ import annotations

import kopf
import pytest

from smart_operator.clients.ssh import key_fingerprint, refused_message
from smart_operator.experiments import deploy_target
from smart_operator.handlers.lifecycle import ssh_keys
from smart_operator.keys import (
    authorized_keys_with,
    generate_ssh_key,
    public_key_of,
    same_key,
    stored_key_pair,
)
from smart_operator.models.domain import Domain
from smart_operator.ports import Target
from tests.unit.test_reconcile_experiment import domain_body

OLD = generate_ssh_key("smart-operator")
NEW = generate_ssh_key("smart-operator")
STAFF = generate_ssh_key("admin@laptop")


def test_the_secret_may_hold_the_previous_key_whose_public_half_may_be_left_out() -> None:
    current, previous = ssh_keys(
        {
            "id_ed25519": NEW.private,
            "id_ed25519.pub": NEW.public,
            "id_ed25519.previous": OLD.private,
        },
        "smartserver-system/smart-operator-ssh",
    )
    assert current == NEW
    assert previous is not None and previous.private == OLD.private
    assert same_key(previous.public, OLD.public) and previous.fingerprint == OLD.fingerprint


def test_without_a_previous_key_there_is_none_and_the_same_key_twice_is_none() -> None:
    assert ssh_keys({"id_ed25519": NEW.private, "id_ed25519.pub": NEW.public}, "s") == (NEW, None)
    same = {"id_ed25519": NEW.private, "id_ed25519.previous": NEW.private}
    assert ssh_keys(same, "s")[1] is None


def test_a_public_key_that_is_not_its_private_keys_half_stops_the_start() -> None:
    with pytest.raises(kopf.PermanentError, match=r"id_ed25519\.previous: the public key"):
        ssh_keys(
            {
                "id_ed25519": NEW.private,
                "id_ed25519.previous": OLD.private,
                "id_ed25519.previous.pub": STAFF.public,
            },
            "ns/smart-operator-ssh",
        )
    with pytest.raises(kopf.PermanentError, match="ns/smart-operator-ssh: id_ed25519"):
        ssh_keys({"id_ed25519": "not a key"}, "ns/smart-operator-ssh")
    with pytest.raises(ValueError, match="not the private key"):
        stored_key_pair(NEW.private, OLD.public)


def test_public_key_of_matches_what_was_generated() -> None:
    assert same_key(public_key_of(OLD.private), OLD.public)


def test_the_previous_key_is_replaced_and_every_other_line_is_kept() -> None:
    text = (
        "# staff\n"
        f"{STAFF.public}\n"
        f"{OLD.public}\n"
        f'from="10.0.0.0/8" {OLD.public.split()[0]} {OLD.public.split()[1]} pinned\n'
    )
    both = authorized_keys_with(text, NEW.public)
    assert both == text + f"{NEW.public}\n"  # first the new key beside the old
    final = authorized_keys_with(text, NEW.public, OLD.public)
    assert final == f"# staff\n{STAFF.public}\n{NEW.public}\n"
    # Already there: nothing is added twice; done twice: the same text.
    assert authorized_keys_with(final, NEW.public, OLD.public) == final
    # An empty or missing file gets the new key alone.
    assert authorized_keys_with("", NEW.public, OLD.public) == f"{NEW.public}\n"
    # Never the operator's only key removed: the same key as add and remove is kept.
    assert authorized_keys_with(final, NEW.public, NEW.public) == final


def test_a_refusal_names_the_fingerprints_tried_and_what_to_do() -> None:
    target = Target("192.0.2.10", 22, STAFF.public, NEW.private, "deploy", 1, OLD.private)
    message = refused_message(target)
    assert key_fingerprint(NEW.private) == NEW.fingerprint
    assert NEW.fingerprint in message and OLD.fingerprint in message
    assert "id_ed25519.previous" in message and "smart-operator-ssh" in message
    alone = refused_message(Target("192.0.2.10", 22, STAFF.public, NEW.private, "deploy"))
    assert NEW.fingerprint in alone and "no previous key is configured" in alone


def test_a_deploy_target_carries_the_previous_key_to_fall_back_on() -> None:
    domain = Domain.model_validate(domain_body())
    target = deploy_target(domain, "shop", "customer-acme", 22, NEW.private, OLD.private)
    assert isinstance(target, Target)
    assert target.client_private_key == NEW.private
    assert target.previous_client_private_key == OLD.private
    alone = deploy_target(domain, "shop", "customer-acme", 22, NEW.private)
    assert isinstance(alone, Target) and alone.previous_client_private_key is None
