"""The sweep: removes labelled cloud objects (servers, firewalls, DNS records) that no
Domain owns any more, for instance after a Domain was removed while the operator was
not running and its finalizer was forced off.

It deletes only what carries our label or tag, whose uid belongs to no Domain in a
fresh listing, and that is older than the grace period: a Domain being created right
now is never swept, so two replicas sweeping at once are harmless too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter

from smart_operator import domains
from smart_operator.errors import ExternalError
from smart_operator.ports import Cloud, Resources

log = logging.getLogger(__name__)
SWEPT = Counter(
    "smartserver_swept_total", "Cloud objects removed because no Domain owns them", ["kind"]
)


@dataclass(frozen=True)
class OrphanRule:
    """Which labelled objects belong to no Domain: pure."""

    owned: frozenset[str]
    """The uids of every Domain, from a fresh listing."""
    cutoff: datetime
    """Objects created after this may belong to a Domain being created right now."""

    def labelled(self, labels: Mapping[str, str], created: datetime | None) -> bool:
        uid = labels.get(domains.UID_LABEL)
        return (
            bool(uid) and uid not in self.owned and created is not None and created <= self.cutoff
        )

    def record(self, owner: domains.RecordOwner | None, installation: str) -> bool:
        """A record marked by this installation for a Domain that is gone. (Records an
        older version tagged name no installation: they are never swept.)"""
        return (
            owner is not None
            and owner.installation == installation
            and (owner.uid not in self.owned)
        )


async def sweep_once(
    cloud: Cloud, resources: Resources, now: datetime, grace_seconds: float, records: bool
) -> dict[str, int]:
    """One sweep; returns how many objects of each kind were removed. ``records``: also
    scan every zone's records (one call per zone, so less often)."""
    rule = OrphanRule(
        frozenset(await resources.domain_uids()), now - timedelta(seconds=grace_seconds)
    )
    removed = {"server": 0, "firewall": 0, "record": 0}
    for account in cloud.pool.clouds() if cloud.pool is not None else [cloud]:
        await _sweep_account(account, rule, removed, records)
    for kind, count in removed.items():
        SWEPT.labels(kind).inc(count)
    return removed


async def _sweep_account(
    cloud: Cloud, rule: OrphanRule, removed: dict[str, int], records: bool
) -> None:
    """One provider account's share of the sweep (the Domains' uids are the cluster's:
    a Domain's objects in another account are its own, never swept here)."""
    mine = domains.managed_labels(cloud.identity.installation)
    for server in await cloud.servers.servers(mine):
        if rule.labelled(server.labels, server.created):
            log.warning("sweeping server %s (%s): no Domain owns it", server.name, server.id)
            await cloud.servers.delete_server(server.id)
            removed["server"] += 1
    for firewall in await cloud.servers.firewalls(mine):
        if rule.labelled(firewall.labels, firewall.created):
            try:
                await cloud.servers.delete_firewall(firewall.id)
            except ExternalError as error:  # still attached: the next sweep
                log.info("firewall %s not swept yet: %s", firewall.name, error)
                continue
            removed["firewall"] += 1
    installation = cloud.identity.installation
    marked = f"{domains.MARKER_PREFIX}{installation}:"
    for zone in await cloud.dns.zones() if records else []:
        for record in await cloud.dns.records(zone.id, comment_prefix=marked):
            if rule.record(domains.record_owner(record.comment, record.tags), installation):
                log.warning("sweeping %s record %s: no Domain owns it", record.type, record.name)
                await cloud.dns.delete_record(zone.id, record.id)
                removed["record"] += 1
