"""Where a new Domain goes in the pool of provider accounts: pure.

One provider account pairs a Hetzner Cloud project with a Cloudflare account (one
Secret, ``docs/operations.md``). Each has its own request budgets (Hetzner's 3600 an
hour per project, not raised on request; Cloudflare's 1200 per 5 minutes per user) and
its own server quota, so a fleet larger than one account allows is spread over several.
A Domain is placed once, before anything is made for it, and stays on that account
(its status and labels say which): every later call uses that account's clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smart_operator.models.customer import ACCOUNT_NAME_PATTERN

__all__ = [
    "ACCOUNT_LABEL",
    "ACCOUNT_NAME_PATTERN",
    "DRAINED_LABEL",
    "SETUP_REQUESTS",
    "AccountLoad",
    "Placed",
    "Unplaced",
    "place",
]

ACCOUNT_LABEL = "smartserver.ai/provider-account"
"""On an account's Secret (its value is the account's name) and on every Domain placed
on it (so ``kubectl get domains -l smartserver.ai/provider-account=NAME`` lists them)."""
DRAINED_LABEL = "smartserver.ai/drained"
"""On an account's Secret, ``"true"``: the account takes no new Domains (those on it
stay, and are reconciled as before)."""


SETUP_REQUESTS = {"hetzner": 6, "cloudflare": 10}
"""About what one Domain's set-up spends of each provider's budget (BENCHMARKS.md,
"requests per Domain": 5.6 and 9.7 at 10,000 Domains). Placement counts it against an
account from the moment a Domain is placed there: the budget headers show the spending
only once the set-up makes its calls, and a burst of new Domains would all go to the
account whose headers looked best until then."""


@dataclass(frozen=True)
class AccountLoad:
    """What placement needs to know of one account now."""

    name: str
    servers: int
    """Domains on it (their servers, and those placed but not made yet)."""
    server_quota: int
    """The most servers its Hetzner project may hold (the project's limit)."""
    budget: float = 1.0
    """The share of its request budgets left, 0 to 1 (the lower of Hetzner's and
    Cloudflare's, as their headers last said, less what the Domains placed on it and
    still being set up will spend: ``SETUP_REQUESTS``)."""
    drained: bool = False

    @property
    def free(self) -> int:
        return max(0, self.server_quota - self.servers)

    @property
    def open(self) -> bool:
        """It may take one more Domain."""
        return not self.drained and self.free > 0

    def describe(self) -> str:
        if self.drained:
            return f"{self.name}: drained"
        return f"{self.name}: {self.servers}/{self.server_quota} servers"


@dataclass(frozen=True)
class Placed:
    account: str


@dataclass(frozen=True)
class Unplaced:
    """No account may take the Domain; ``message`` says why and what to do."""

    message: str


def place(accounts: Sequence[AccountLoad], pin: str | None = None) -> Placed | Unplaced:
    """The account a new Domain goes to: the pinned one (a Customer's
    ``spec.providerAccount``) or else the open account with the most room, as the
    lower of its free share of the server quota and its share of request budget left
    (in steps of 5%; so new Domains spread evenly, and away from an account that is
    busy now); ties go to the most free servers, then the name."""
    if pin is not None:
        pinned = next((a for a in accounts if a.name == pin), None)
        if pinned is None:
            known = ", ".join(sorted(a.name for a in accounts)) or "none"
            return Unplaced(
                f"the Customer is pinned to provider account {pin} (spec.providerAccount), "
                f"which the operator does not have (accounts: {known}): add its Secret, or "
                "change the Customer's spec.providerAccount"
            )
        if pinned.drained:
            return Unplaced(
                f"the Customer is pinned to provider account {pin}, which is drained (label "
                f"{DRAINED_LABEL}=true on its Secret): un-drain it, or change the "
                "Customer's spec.providerAccount"
            )
        if pinned.free == 0:
            return Unplaced(
                f"the Customer is pinned to provider account {pin}, which is full "
                f"({pinned.servers}/{pinned.server_quota} servers): raise its server-quota "
                "(and the Hetzner project's limit), or change the Customer's "
                "spec.providerAccount"
            )
        return Placed(pin)
    candidates = [a for a in accounts if a.open]
    if not candidates:
        state = "; ".join(a.describe() for a in sorted(accounts, key=lambda a: a.name))
        return Unplaced(
            f"every provider account is drained or full ({state or 'no accounts'}): add an "
            "account Secret, raise an account's server-quota, or un-drain one"
        )
    best = max(
        candidates,
        key=lambda a: (min(a.free / a.server_quota, _steps(a.budget)), a.free, _desc(a.name)),
    )
    return Placed(best.name)


def _steps(budget: float) -> float:
    """The budget share in steps of 5%: a request or two spent a moment ago is no
    reason to prefer another account."""
    return round(max(0.0, min(1.0, budget)) * 20) / 20


def _desc(name: str) -> tuple[int, ...]:
    """Sorts names backwards, so that ``max`` prefers the first name on a tie."""
    return (*(-ord(c) for c in name), 0)
