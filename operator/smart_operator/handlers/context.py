"""What every handler shares: settings, the plan catalog and the API clients.
Created once at operator start-up and kept in kopf's memo."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from smart_operator.clients.budget import RequestBudget
from smart_operator.clients.cloudflare import Cloudflare
from smart_operator.clients.hetzner import Hetzner
from smart_operator.clients.inventory import ActionWatcher, Catalog, Fleet
from smart_operator.clients.kube import Kube
from smart_operator.keys import SSHKeyPair
from smart_operator.metrics import reconciling
from smart_operator.plans import Catalog as PlanCatalog
from smart_operator.settings import OperatorSettings


@dataclass
class Cloud:
    """The providers, and the shared views that keep calls flat as Domains grow."""

    hetzner: Hetzner
    cloudflare: Cloudflare
    operator_key: SSHKeyPair
    actions: ActionWatcher
    fleet: Fleet
    catalog: Catalog
    ssh_key_id: int | None = None

    async def close(self) -> None:
        await self.actions.close()
        await self.cloudflare.close()
        self.hetzner.close()


@dataclass
class Context:
    settings: OperatorSettings
    catalog: PlanCatalog
    kube: Kube
    cloud: Cloud | None = None
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    """One event per Domain uid: set when its spec changes, to wake its daemon."""
    dns_checked: dict[str, float] = field(default_factory=dict)
    """When each Domain's DNS records were last checked (monotonic seconds)."""
    dns_checks: RequestBudget | None = None
    """The platform-wide allowance of steady-state DNS checks (``dns_checks_per_hour``)."""


def context(memo: Any) -> Context:
    return cast(Context, memo.context)


async def reconcile_until_stopped(
    ctx: Context,
    uid: str,
    stopped: Any,
    kind: str,
    one_pass: Callable[[], Awaitable[float]],
) -> None:
    """The loop of a resource's daemon: one pass, then sleep for the seconds it asked
    for or until its spec changes (``wake``), until kopf stops the daemon."""
    wakeup = ctx.wakeups.setdefault(uid, asyncio.Event())
    try:
        while not stopped:
            wakeup.clear()
            with reconciling(kind):
                delay = await one_pass()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
    finally:
        ctx.wakeups.pop(uid, None)


def wake(ctx: Context, uid: str) -> None:
    """Cut a daemon's sleep short: its resource's spec changed."""
    event = ctx.wakeups.get(uid)
    if event is not None:
        event.set()
