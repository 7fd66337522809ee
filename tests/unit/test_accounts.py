"""Placement of new Domains in the pool of provider accounts (``smart_operator.accounts``)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from smart_operator.accounts import (
    ACCOUNT_LABEL,
    DRAINED_LABEL,
    AccountLoad,
    Placed,
    Unplaced,
    place,
)
from smart_operator.clients.accounts import parse_secret
from smart_operator.clients.budget import RequestBudget
from smart_operator.clients.kube import SecretView
from smart_operator.models.customer import CustomerSpec


def test_the_account_with_the_most_free_quota_takes_the_domain() -> None:
    accounts = [AccountLoad("a", 8, 10), AccountLoad("b", 3, 10), AccountLoad("c", 5, 10)]
    assert place(accounts) == Placed("b")


def test_free_share_counts_not_free_servers_so_a_small_account_is_not_starved() -> None:
    # b has fewer free servers but a larger share of its quota free.
    assert place([AccountLoad("a", 50, 100), AccountLoad("b", 2, 10)]) == Placed("b")


def test_an_account_low_on_request_budget_gives_way() -> None:
    busy = AccountLoad("a", 0, 10, budget=0.05)
    idle = AccountLoad("b", 5, 10, budget=1.0)
    assert place([busy, idle]) == Placed("b")


def test_ties_go_to_the_first_name() -> None:
    accounts = [AccountLoad("b", 0, 10), AccountLoad("ab", 0, 10), AccountLoad("a", 0, 10)]
    assert place(accounts) == Placed("a")


def test_new_domains_spread_evenly_over_equal_accounts() -> None:
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(30):
        placed = place([AccountLoad(name, n, 100) for name, n in counts.items()])
        assert isinstance(placed, Placed)
        counts[placed.account] += 1
    assert counts == {"a": 10, "b": 10, "c": 10}


def test_a_full_account_sends_the_next_domain_elsewhere() -> None:
    assert place([AccountLoad("a", 10, 10), AccountLoad("b", 9, 10)]) == Placed("b")


def test_a_drained_account_takes_no_new_domain() -> None:
    accounts = [AccountLoad("a", 0, 10, drained=True), AccountLoad("b", 9, 10)]
    assert place(accounts) == Placed("b")


def test_all_full_or_drained_says_which_and_what_to_do() -> None:
    result = place([AccountLoad("a", 10, 10), AccountLoad("b", 0, 10, drained=True)])
    assert isinstance(result, Unplaced)
    assert "a: 10/10 servers" in result.message
    assert "b: drained" in result.message
    assert "add an account Secret" in result.message


def test_no_accounts_at_all_is_unplaced() -> None:
    result = place([])
    assert isinstance(result, Unplaced)
    assert "no accounts" in result.message


def test_a_pinned_customer_stays_on_its_account_even_when_others_have_more_room() -> None:
    accounts = [AccountLoad("a", 9, 10), AccountLoad("b", 0, 10)]
    assert place(accounts, pin="a") == Placed("a")


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        ([AccountLoad("a", 10, 10), AccountLoad("b", 0, 10)], "which is full (10/10 servers)"),
        ([AccountLoad("a", 0, 10, drained=True), AccountLoad("b", 0, 10)], "which is drained"),
        ([AccountLoad("b", 0, 10)], "which the operator does not have (accounts: b)"),
    ],
)
def test_a_pinned_customer_never_moves_to_another_account(
    accounts: list[AccountLoad], expected: str
) -> None:
    result = place(accounts, pin="a")
    assert isinstance(result, Unplaced)
    assert expected in result.message
    assert "spec.providerAccount" in result.message


def test_a_pin_must_be_an_account_name() -> None:
    with pytest.raises(ValidationError, match=r"provider_account|providerAccount"):
        CustomerSpec.model_validate({"email": "a@example.com", "providerAccount": "Not_OK"})
    spec = CustomerSpec.model_validate({"email": "a@example.com", "providerAccount": "eu-2"})
    assert spec.provider_account == "eu-2"


def secret(labels: dict[str, str] | None = None, **data: str) -> SecretView:
    base = {
        "hetzner-token": "h",
        "cloudflare-token": "c",
        "cloudflare-account-id": "acc",
    }
    return SecretView("provider-eu-2", labels or {}, {**base, **data})


def test_an_account_secret_names_its_account_and_limits() -> None:
    spec = parse_secret(
        secret(
            {ACCOUNT_LABEL: "eu-2", DRAINED_LABEL: "true"},
            **{"server-quota": "25", "hetzner-requests-per-hour": "7200"},
        )
    )
    assert (spec.name, spec.server_quota, spec.hetzner_per_hour, spec.drained) == (
        "eu-2",
        25,
        7200,
        True,
    )
    assert spec.cloudflare_per_5_minutes == 1200
    # Without the label, the Secret's own name names the account.
    assert parse_secret(secret()).name == "provider-eu-2"
    assert parse_secret(secret()).drained is False


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (secret(**{"cloudflare-token": " "}), "the keys cloudflare-token are missing or empty"),
        (secret(**{"server-quota": "ten"}), "server-quota must be a whole number above 0"),
        (secret(**{"server-quota": "0"}), "server-quota must be a whole number above 0"),
        (secret({ACCOUNT_LABEL: "EU_2"}), "is not an account name"),
    ],
)
def test_a_wrong_account_secret_says_what_is_wrong(bad: SecretView, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_secret(bad)


def test_each_accounts_budget_has_its_own_share_and_gauge() -> None:
    now = [0.0]
    eu2 = RequestBudget("hetzner", 100, 1.0, clock=lambda: now[0], account="eu-2")
    eu3 = RequestBudget("hetzner", 100, 1.0, clock=lambda: now[0], account="eu-3")
    for _ in range(75):
        assert eu2.try_take()
    eu2.observe(remaining=25, reset_in=75.0, limit=100)
    assert eu2.share() == pytest.approx(0.25)
    assert eu3.share() == 1.0
    gauge = REGISTRY.get_sample_value
    labels = {"provider": "hetzner"}
    assert gauge("smartserver_account_budget_remaining", {**labels, "account": "eu-2"}) == 25
    assert gauge("smartserver_account_budget_remaining", {**labels, "account": "eu-3"}) == 100
    now[0] = 25.0  # refills at the rate the headers imply
    assert eu2.share() == pytest.approx(0.5)


def test_a_request_or_two_of_budget_does_not_decide() -> None:
    accounts = [AccountLoad("b", 0, 10, budget=1.0), AccountLoad("a", 0, 10, budget=0.999)]
    assert place(accounts) == Placed("a")
