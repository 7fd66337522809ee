"""The pool of provider accounts: each a Hetzner Cloud project and a Cloudflare account
with their own clients, request budgets, server quota and gauges.

The operator's own tokens (``SMART_HETZNER_TOKEN``, ``SMART_CLOUDFLARE_TOKEN``) are the
account ``default``; each Secret named in ``SMART_ACCOUNT_SECRETS`` (in the operator's
namespace, read by name: the operator may not list Secrets) is one more, named by its
``smartserver.ai/provider-account`` label or else its own name (its keys:
``docs/operations.md``). The Secrets are read at start-up and again, at most every
``refresh_seconds``, when a Domain is placed: the ``smartserver.ai/drained`` label and
the ``server-quota`` key take effect without a restart (a changed token does not: a
restart picks it up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import Gauge

from smart_operator.accounts import (
    ACCOUNT_LABEL,
    ACCOUNT_NAME_PATTERN,
    DRAINED_LABEL,
    SETUP_REQUESTS,
    AccountLoad,
    Placed,
    Unplaced,
    place,
)
from smart_operator.clients.budget import RequestBudget
from smart_operator.clients.cloudflare import Cloudflare
from smart_operator.clients.hetzner import Hetzner
from smart_operator.clients.inventory import ActionWatcher, Catalog, Fleet
from smart_operator.clients.kube import Kube, SecretView
from smart_operator.errors import ExternalError
from smart_operator.ports import Cloud, Identity
from smart_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
DEFAULT = "default"
"""The account of the operator's own tokens, and of every Domain made before the pool."""

ACCOUNT_SERVERS = Gauge(
    "smartserver_account_servers",
    "Domains on a provider account of the pool (with a server, or placed and making one)",
    ["account"],
)
ACCOUNT_QUOTA = Gauge(
    "smartserver_account_server_quota",
    "The most servers a provider account's Hetzner project may hold (its server-quota)",
    ["account"],
)
ACCOUNT_DRAINED = Gauge(
    "smartserver_account_drained",
    "1 while a provider account is drained (takes no new Domains)",
    ["account"],
)


@dataclass(frozen=True)
class AccountSpec:
    """One account as its Secret (or the operator's settings) describes it."""

    name: str
    hetzner_token: str
    cloudflare_token: str
    cloudflare_account_id: str
    server_quota: int
    hetzner_per_hour: int = 3600
    cloudflare_per_5_minutes: int = 1200
    drained: bool = False


def _positive(data: dict[str, str], key: str, default: int) -> int:
    text = data.get(key, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{key} must be a whole number above 0, not {text!r}")
    return int(text)


def parse_secret(secret: SecretView) -> AccountSpec:
    """An account from its Secret; ``ValueError`` says what is wrong and how to fix it."""
    name = secret.labels.get(ACCOUNT_LABEL) or secret.name
    if not re.match(ACCOUNT_NAME_PATTERN, name):
        raise ValueError(
            f"label {ACCOUNT_LABEL}={name!r} is not an account name (lower-case letters, "
            "digits and '-', at most 63)"
        )
    missing = [
        key
        for key in ("hetzner-token", "cloudflare-token", "cloudflare-account-id")
        if not secret.data.get(key, "").strip()
    ]
    if missing:
        raise ValueError(f"the keys {', '.join(missing)} are missing or empty")
    return AccountSpec(
        name=name,
        hetzner_token=secret.data["hetzner-token"].strip(),
        cloudflare_token=secret.data["cloudflare-token"].strip(),
        cloudflare_account_id=secret.data["cloudflare-account-id"].strip(),
        server_quota=_positive(secret.data, "server-quota", 100),
        hetzner_per_hour=_positive(secret.data, "hetzner-requests-per-hour", 3600),
        cloudflare_per_5_minutes=_positive(secret.data, "cloudflare-requests-per-5-minutes", 1200),
        drained=secret.labels.get(DRAINED_LABEL, "").lower() == "true",
    )


@dataclass
class Account:
    """One account's clients and what placement knows of it."""

    spec: AccountSpec
    cloud: Cloud
    hetzner: Hetzner
    cloudflare: Cloudflare
    fleet: Fleet
    actions: ActionWatcher
    exhausted_at: float = float("-inf")

    async def close(self) -> None:
        await self.actions.close()
        await self.cloudflare.close()
        self.hetzner.close()


def connect(spec: AccountSpec, settings: OperatorSettings, identity: Identity) -> Account:
    """The clients of one account, each with the account's own request budget."""
    hetzner = Hetzner(
        spec.hetzner_token,
        settings.hetzner_endpoint,
        RequestBudget(
            "hetzner",
            limit=spec.hetzner_per_hour,
            per_second=spec.hetzner_per_hour / 3600,
            account=spec.name,
        ),
        account=spec.name,
    )
    cloudflare = Cloudflare(
        spec.cloudflare_token,
        settings.cloudflare_endpoint,
        spec.cloudflare_account_id,
        RequestBudget(
            "cloudflare",
            limit=spec.cloudflare_per_5_minutes,
            per_second=spec.cloudflare_per_5_minutes / 300,
            shape="window",
            account=spec.name,
        ),
        account=spec.name,
    )
    actions, fleet = ActionWatcher(hetzner), Fleet(hetzner)
    cloud = Cloud(
        servers=hetzner,
        dns=cloudflare,
        identity=identity,
        actions=actions,
        fleet=fleet,
        catalog=Catalog(hetzner),
        account=spec.name,
    )
    return Account(spec, cloud, hetzner, cloudflare, fleet, actions)


SecretLister = Callable[[], Awaitable[list[SecretView]]]


@dataclass
class AccountPool:
    """The ``Pool`` port: every account, and the placement of new Domains."""

    settings: OperatorSettings
    identity: Identity
    read_secrets: SecretLister
    accounts: dict[str, Account] = field(default_factory=dict)
    default_name: str = DEFAULT
    refresh_seconds: float = 60.0
    from_settings: bool = False
    """The account ``default`` is the operator's own tokens (no Secret may take its name)."""
    _members: dict[str, set[str]] = field(default_factory=dict)
    _where: dict[str, str] = field(default_factory=dict)
    _read_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _refreshing: asyncio.Task[None] | None = None

    @property
    def default(self) -> str:
        return self.default_name

    def add(self, spec: AccountSpec) -> None:
        """An account, new or with new limits (its clients stay: a token change needs a
        restart)."""
        known = self.accounts.get(spec.name)
        if known is None:
            account = connect(spec, self.settings, self.identity)
            account.cloud.pool = self
            self.accounts[spec.name] = account
        else:
            known.spec = spec
        ACCOUNT_QUOTA.labels(spec.name).set(spec.server_quota)
        ACCOUNT_DRAINED.labels(spec.name).set(1 if spec.drained else 0)

    async def refresh(self) -> None:
        """Read the account Secrets again; one that is wrong is logged and left out (an
        account already in use keeps its clients and last good limits)."""
        self._read_at = time.monotonic()
        for secret in await self.read_secrets():
            try:
                spec = parse_secret(secret)
            except ValueError as error:
                log.error(
                    "provider account Secret %s/%s is not used: %s (docs/operations.md, "
                    "Provider accounts)",
                    self.settings.operator_namespace,
                    secret.name,
                    error,
                )
                continue
            if spec.name == DEFAULT and DEFAULT in self.accounts and self.from_settings:
                log.error(
                    "provider account Secret %s names the account %r, which is the "
                    "operator's own tokens (SMART_HETZNER_TOKEN): rename it",
                    secret.name,
                    DEFAULT,
                )
                continue
            self.add(spec)

    def cloud(self, name: str) -> Cloud | None:
        account = self.accounts.get(name)
        return account.cloud if account is not None else None

    def clouds(self) -> list[Cloud]:
        return [self.accounts[name].cloud for name in sorted(self.accounts)]

    def note(self, uid: str, name: str) -> None:
        before = self._where.get(uid)
        if before == name:
            return
        if before is not None:
            self._members.get(before, set()).discard(uid)
        self._where[uid] = name
        self._members.setdefault(name, set()).add(uid)

    def forget(self, uid: str) -> None:
        name = self._where.pop(uid, None)
        if name is not None:
            self._members.get(name, set()).discard(uid)

    def exhausted(self, name: str) -> None:
        account = self.accounts.get(name)
        if account is not None:
            account.exhausted_at = time.monotonic()

    async def load(self, account: Account) -> AccountLoad:
        """One account as placement sees it: its Domains are those with a server in its
        project and those placed on it that have none yet. The servers are the shared
        fleet listing: listed here only the first time (placements take turns, and one
        waiting on a busy account's budget would hold them all); afterwards the steady
        Domains' drift checks keep it fresh. A refused create counts the account full
        for a while."""
        listed = await account.fleet.uids(math.inf if account.fleet.listed else 0)
        members = self._members.get(account.spec.name, set())
        servers = len(listed | members)
        if time.monotonic() - account.exhausted_at < self.refresh_seconds:
            servers = max(servers, account.spec.server_quota)
        ACCOUNT_SERVERS.labels(account.spec.name).set(servers)
        # Placed here and no server listed yet: their set-ups are still to spend.
        setting_up = len(members - listed)
        budget = min(
            account.hetzner.budget.share(setting_up * SETUP_REQUESTS["hetzner"]),
            account.cloudflare.budget.share(setting_up * SETUP_REQUESTS["cloudflare"]),
        )
        return AccountLoad(
            account.spec.name, servers, account.spec.server_quota, budget, account.spec.drained
        )

    def _refresh_soon(self) -> None:
        """Read the Secrets again in the background when they are due: placements
        never wait for the API server's answers (they take turns)."""
        if time.monotonic() - self._read_at < self.refresh_seconds:
            return
        if self._refreshing is not None and not self._refreshing.done():
            return
        self._read_at = time.monotonic()
        self._refreshing = asyncio.create_task(self._refresh_logged(), name="account secrets")

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except ExternalError as error:  # the last good reading stays
            log.warning("reading the provider account Secrets failed: %s", error)

    async def place(self, uid: str, pin: str | None) -> Placed | Unplaced:
        self._refresh_soon()
        async with self._lock:  # one placement at a time: each sees the ones before
            loads = [await self.load(self.accounts[name]) for name in sorted(self.accounts)]
            result = place(loads, pin)
            if isinstance(result, Placed):
                self.note(uid, result.account)
            return result

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        for account in self.accounts.values():
            await account.close()


async def connect_pool(
    kube: Kube, settings: OperatorSettings, identity: Callable[[], Awaitable[Identity]]
) -> AccountPool | None:
    """The pool: the operator's own tokens (account ``default``) and the account
    Secrets of its namespace; None when there is no account at all (the operator's
    ``identity`` is made only when there is one)."""
    namespace = settings.operator_namespace

    async def read_secrets() -> list[SecretView]:
        found = []
        for name in settings.account_secrets:
            secret = await kube.secret(namespace, name)
            if secret is None:
                log.error(
                    "provider account Secret %s/%s (SMART_ACCOUNT_SECRETS) does not exist",
                    namespace,
                    name,
                )
                continue
            found.append(secret)
        return found

    secrets = await read_secrets()
    own = settings.hetzner_token is not None and settings.cloudflare_token is not None
    if not own and not secrets:
        return None
    pool = AccountPool(
        settings, await identity(), read_secrets, refresh_seconds=settings.account_refresh_seconds
    )
    if settings.hetzner_token is not None and settings.cloudflare_token is not None:
        pool.add(
            AccountSpec(
                name=DEFAULT,
                hetzner_token=settings.hetzner_token.get_secret_value(),
                cloudflare_token=settings.cloudflare_token.get_secret_value(),
                cloudflare_account_id=settings.cloudflare_account_id,
                server_quota=settings.default_account_server_quota,
                drained=settings.default_account_drained,
            )
        )
        pool.from_settings = True
    await pool.refresh()
    if not pool.accounts:
        return None
    if DEFAULT not in pool.accounts:
        pool.default_name = sorted(pool.accounts)[0]
    return pool
