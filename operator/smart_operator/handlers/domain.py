"""Domain lifecycle: ownership, firewall, server, DNS, agent; deletion; drift repair.

Each Domain has a kopf daemon that reconciles it and then sleeps until the next check
is due (seconds while something converges, the drift interval once Ready) or until its
spec changes. Every step looks before it acts and marks what it makes with the
Domain's uid, so the operator can be killed at any instant and a restart continues
where it stopped: no duplicate server, no leaked record. Status is written at once
after each step that changed something the next step relies on (the server id first).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf

from smart_operator import domains
from smart_operator.clients.cloudflare import ZoneView
from smart_operator.clients.errors import (
    Conflict,
    PermanentProviderError,
    ProviderError,
    TemporaryProviderError,
)
from smart_operator.clients.hetzner import ServerView
from smart_operator.cloudinit import UserDataInput, render_user_data
from smart_operator.conditions import now, set_condition
from smart_operator.handlers.context import (
    Cloud,
    Context,
    context,
    reconcile_until_stopped,
    wake,
)
from smart_operator.keys import fingerprint, generate_intake_key, generate_ssh_key, hash_intake_key
from smart_operator.metrics import reconciling
from smart_operator.models.common import GROUP, VERSION, ConditionStatus
from smart_operator.models.domain import (
    AgentStatus,
    DNSRecordStatus,
    DNSStatus,
    Domain,
    DomainStatus,
    ServerStatus,
)
from smart_operator.settings import OperatorSettings

DOMAINS = (GROUP, VERSION, "domains")
POLL_SECONDS = 2.0


class Waiting(Exception):
    """A step cannot finish yet; the reconcile stops here and checks again later."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class DomainReconciler:
    """One pass over one Domain. ``run()`` returns the seconds until the next pass."""

    def __init__(self, ctx: Context, body: dict[str, Any], logger: kopf.Logger) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.body = body
        self.logger = logger
        self.domain = Domain.model_validate(body)
        self.uid = self.domain.metadata.uid or ""
        self.generation = self.domain.metadata.generation
        self.written = (self.domain.status or DomainStatus()).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        self.status = (self.domain.status or DomainStatus()).model_copy(deep=True)
        self.status.observed_generation = self.generation

    # -- status --------------------------------------------------------------------------

    def condition(self, type: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type, status, reason, message, self.generation
        )

    async def write(self) -> None:
        """Patch the status if it changed since it was last written."""
        phase, conditions = domains.phase_and_ready(self.status.conditions, self.generation)
        self.status.phase, self.status.conditions = phase, conditions
        new = self.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if new == self.written:
            return
        # Only the fields this pass changed: status.agent belongs to the intake, which
        # may have written a newer heartbeat since this pass read the Domain.
        patch: dict[str, Any] = {k: v for k, v in new.items() if self.written.get(k) != v}
        # Fields that were set and are now gone must be nulled in a merge patch.
        for key in self.written:
            if key not in new:
                patch[key] = None
        meta = self.domain.metadata
        await self.ctx.kube.patch_status("domains", meta.namespace or "", meta.name, patch)
        self.written = new

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        post = kopf.warn if warning else kopf.info
        post(cast(kopf.Body, self.body), reason=reason, message=message)

    # -- the pass ------------------------------------------------------------------------

    async def run(self) -> float:
        cloud = self.ctx.cloud
        if cloud is None:
            message = (
                "the operator has no cloud credentials: set SMART_HETZNER_TOKEN and "
                "SMART_CLOUDFLARE_TOKEN (Helm values hetzner.token, cloudflare.token)"
            )
            self.condition("ServerReady", "False", "OperatorNotConfigured", message)
            await self.write()
            return self.settings.drift_seconds
        if self.domain.spec.paused:
            self.condition(
                "Paused",
                "True",
                "PausedBySpec",
                "spec.paused is true: the server is left as it is (nothing created, repaired "
                "or deployed) and serves only control variants",
            )
            await self.write()
            return self.settings.drift_seconds
        self.condition("Paused", "False", "Active", "reconciled and repaired as usual")
        step = "ServerReady"
        steady = self.is_steady()
        try:
            if not await self.check_shape(cloud):
                await self.write()
                return self.settings.drift_seconds
            step = "Verified"
            zone = self.known_zone() if steady else None
            zone = zone or await self.verify(cloud)
            step = "ServerReady"
            server = await self.ensure_server(cloud, steady)
            step = "DNSReady"
            checked = self.ctx.dns_checked.get(self.uid, float("-inf"))
            due = time.monotonic() - checked >= self.settings.dns_drift_seconds
            # A steady Domain's check also needs the platform-wide allowance, so the
            # calls per hour stay flat however many Domains there are.
            allowed = due and (self.ctx.dns_checks is None or self.ctx.dns_checks.try_take())
            if not steady or allowed:
                await self.ensure_dns(cloud, zone, server)
                self.ctx.dns_checked[self.uid] = time.monotonic()
            self.check_agent()
        except Waiting as waiting:
            await self.write()
            return waiting.delay
        except TemporaryProviderError as error:
            self.condition(step, "False", "ProviderUnavailable", f"{error}; retrying")
            await self.write()
            return error.delay
        except PermanentProviderError as error:
            self.condition(step, "False", "ProviderRejected", str(error))
            self.event("ProviderRejected", str(error), warning=True)
            await self.write()
            return self.settings.drift_seconds
        await self.write()
        return self.next_check()

    def is_steady(self) -> bool:
        """Verified with a running server already: checks can use the shared views."""
        server = self.status.server
        ok = {c.type for c in self.status.conditions if c.status == "True"}
        return (
            {"Verified", "ServerReady"} <= ok
            and server is not None
            and server.id is not None
            and self.status.observed_generation
            == (self.domain.status or DomainStatus()).observed_generation
        )

    def known_zone(self) -> ZoneView | None:
        dns = self.status.dns
        if dns is None or dns.zone_id is None or dns.zone_name is None:
            return None
        return ZoneView(dns.zone_id, dns.zone_name, "active", list(dns.name_servers))

    def next_check(self) -> float:
        agent_ok = any(
            c.type == "AgentConnected" and c.status == "True" for c in self.status.conditions
        )
        if not agent_ok:
            return min(self.settings.drift_seconds, 10.0)
        return self.settings.drift_seconds

    # -- steps ---------------------------------------------------------------------------

    async def check_shape(self, cloud: Cloud) -> bool:
        """Server type and location against the provider's catalog, naming the choices."""
        shape = self.domain.spec.server
        types = await cloud.catalog.types()
        if shape.type not in types:
            self.condition(
                "ServerReady",
                "False",
                "InvalidSpec",
                f"spec.server.type {shape.type!r} is not a Hetzner server type; "
                f"use one of: {', '.join(sorted(types))}",
            )
            return False
        locations = types[shape.type].monthly_price
        if locations and shape.location not in locations:
            self.condition(
                "ServerReady",
                "False",
                "InvalidSpec",
                f"spec.server.type {shape.type} is not offered in {shape.location}; "
                f"spec.server.location may be one of: {', '.join(sorted(locations))}",
            )
            return False
        return True

    async def verify(self, cloud: Cloud) -> ZoneView:
        """Ownership: the domain's zone is active in our Cloudflare account, which means its
        nameservers point at Cloudflare for us. A missing zone is created (pending)."""
        name = self.domain.spec.domain
        dns = self.status.dns or DNSStatus()
        zone = await cloud.cloudflare.zone_for(name)
        if zone is None:
            zone = await cloud.cloudflare.create_zone(name)
            dns.zone_created = True
            self.event("ZoneCreated", f"created Cloudflare zone {zone.name} (pending)")
        dns.zone_id, dns.zone_name, dns.name_servers = zone.id, zone.name, zone.name_servers
        self.status.dns = dns
        if zone.status != "active":
            await cloud.cloudflare.check_activation(zone.id)
            zone = await cloud.cloudflare.get_zone(zone.id)
        if zone.status != "active":
            servers = ", ".join(zone.name_servers) or "the zone's Cloudflare nameservers"
            self.condition(
                "Verified",
                "False",
                "ZonePending",
                f"set the nameservers of {zone.name} to {servers} at its registrar; "
                f"checked again every {self.settings.verify_seconds:.0f} s",
            )
            raise Waiting(self.settings.verify_seconds)
        if not any(c.type == "Verified" and c.status == "True" for c in self.status.conditions):
            self.event("Verified", f"zone {zone.name} is active in Cloudflare")
        self.condition("Verified", "True", "ZoneActive", f"zone {zone.name} is active")
        return zone

    async def ensure_firewall(self, cloud: Cloud) -> int:
        labels = domains.cloud_labels(self.uid)
        found = await cloud.hetzner.firewalls(labels)
        if found:
            return found[0].id
        name = domains.cloud_name(self.domain, "-fw")
        sources = self.settings.ssh_sources
        if not sources:
            raise PermanentProviderError(
                "operator",
                "SMART_SSH_SOURCES is empty: set the addresses the operator connects from, "
                "the only SSH sources the servers' firewalls allow",
            )
        try:
            return (await cloud.hetzner.create_firewall(name, labels, sources)).id
        except Conflict:
            existing = await cloud.hetzner.firewall_by_name(name)
            if existing is not None and existing.labels.get(domains.UID_LABEL) == self.uid:
                return existing.id
            raise PermanentProviderError(
                "hetzner",
                f"a firewall named {name} exists that Smart Server did not make for this "
                "Domain; delete or rename it",
            ) from None

    async def ensure_server(self, cloud: Cloud, steady: bool) -> ServerView:
        labels = domains.cloud_labels(self.uid)
        found = await cloud.fleet.servers(self.uid, self.settings.drift_seconds) if steady else []
        if not found:
            # Decisions to create are made on a fresh, exact answer, never on the cache.
            found = await cloud.hetzner.servers(labels)
        server = await self._keep_one(cloud, found)
        if server is None:
            server = await self.create_server(cloud)
        self.status.server = self._server_status(server)
        cloud.fleet.remember(self.uid, server)
        await self.write()
        if server.status != "running":
            self.condition(
                "ServerReady", "False", "Starting", f"server {server.name} is {server.status}"
            )
            raise Waiting(POLL_SECONDS)
        self.condition(
            "ServerReady",
            "True",
            "Running",
            f"server {server.name} ({server.ipv4}) is running",
        )
        return server

    async def _keep_one(self, cloud: Cloud, found: list[ServerView]) -> ServerView | None:
        """The Domain's server; should a second one exist, it is removed."""
        if not found:
            return None
        known = self.status.server.id if self.status.server else None
        keep = next((s for s in found if s.id == known), min(found, key=lambda s: s.id))
        for extra in found:
            if extra.id != keep.id:
                await cloud.hetzner.delete_server(extra.id)
                self.event("DuplicateRemoved", f"removed a second server {extra.id}", True)
        return keep

    async def create_server(self, cloud: Cloud) -> ServerView:
        previous = self.status.server
        if previous and previous.id and not previous.create_requested_at:
            self.event(
                "ServerMissing",
                f"server {previous.name} ({previous.id}) is gone; creating a new one",
                warning=True,
            )
        firewall = await self.ensure_firewall(cloud)
        if cloud.ssh_key_id is None:
            cloud.ssh_key_id = await cloud.hetzner.ensure_ssh_key(
                "smart-operator", cloud.operator_key.public, domains.managed_labels()
            )
        name = domains.cloud_name(self.domain)
        host_key = generate_ssh_key(f"root@{name}")
        intake_key = generate_intake_key()
        # Remember the new keys before asking: if the answer is lost, the server found
        # later by its label carries exactly these.
        self.status.server = ServerStatus(
            name=name,
            firewall_id=firewall,
            host_public_key=host_key.public,
            host_key_fingerprint=host_key.fingerprint,
            create_requested_at=now(),
        )
        self.status.intake_key_hash = hash_intake_key(intake_key)
        self.status.agent = None
        self.condition("ServerReady", "False", "Creating", f"creating server {name}")
        await self.write()
        user_data = render_user_data(
            UserDataInput(
                hostname=name,
                domain=self.domain.spec.domain,
                host_private_key=host_key.private,
                host_public_key=host_key.public,
                operator_public_key=cloud.operator_key.public,
                intake_url=self.settings.intake_url,
                intake_key=intake_key,
                namespace=self.domain.metadata.namespace or "",
                domain_resource=self.domain.metadata.name,
            )
        )
        shape = self.domain.spec.server
        try:
            server, action = await cloud.hetzner.create_server(
                name=name,
                server_type=shape.type,
                image=shape.image,
                location=shape.location,
                user_data=user_data,
                labels=domains.cloud_labels(self.uid),
                ssh_key_ids=[cloud.ssh_key_id],
                firewall_ids=[firewall],
            )
        except Conflict:
            existing = await cloud.hetzner.server_by_name(name)
            if existing is not None and existing.labels.get(domains.UID_LABEL) == self.uid:
                return existing
            raise PermanentProviderError(
                "hetzner",
                f"a server named {name} exists that Smart Server did not make for this "
                "Domain; delete or rename it",
            ) from None
        self.event("ServerCreated", f"created server {server.name} ({server.id})")
        self.status.server = self._server_status(server)
        await self.write()  # the id, at once
        if action is not None:
            outcome = await cloud.actions.wait(action)
            if outcome != "success":
                raise TemporaryProviderError("hetzner", f"server {name} failed to start", 10)
            server = await cloud.hetzner.server(server.id)
        return server

    def _server_status(self, server: ServerView) -> ServerStatus:
        previous = self.status.server or ServerStatus()
        return ServerStatus(
            id=server.id,
            name=server.name,
            ipv4=server.ipv4,
            ipv6=server.ipv6,
            status=server.status,
            firewall_id=previous.firewall_id,
            host_public_key=previous.host_public_key,
            host_key_fingerprint=previous.host_key_fingerprint
            or (fingerprint(previous.host_public_key) if previous.host_public_key else None),
            monthly_price=previous.monthly_price,
        )

    async def ensure_dns(self, cloud: Cloud, zone: ZoneView, server: ServerView) -> None:
        """Our records point at the server; records that are not ours are never touched.
        One listing of the zone and at most one batch of changes."""
        desired = domains.desired_records(self.domain, server.ipv4, server.ipv6)
        tag = domains.record_tag(self.uid)
        existing = [
            domains.ExistingRecord(r.id, r.type, r.name, r.content, tuple(r.tags))
            for r in await cloud.cloudflare.records(zone.id)
        ]
        plan = domains.plan_records(desired, existing, tag)
        settled = [
            DNSRecordStatus(id=r.id, type=r.type, name=r.name, content=r.content) for r in plan.kept
        ]
        if not plan.empty:
            changed = await cloud.cloudflare.batch(
                zone.id,
                posts=[self._record_fields(want, tag) for want in plan.create],
                patches=[
                    {"id": record_id, **self._record_fields(want, tag)}
                    for record_id, want in plan.update
                ],
                deletes=plan.delete,
            )
            settled += [
                DNSRecordStatus(id=r.id, type=r.type, name=r.name, content=r.content)
                for r in changed
            ]
            if plan.update:
                self.event(
                    "RecordRepaired",
                    ", ".join(f"{w.type} {w.name} → {w.content}" for _, w in plan.update),
                )
        dns = self.status.dns or DNSStatus()
        dns.records = sorted(settled, key=lambda r: (r.name, r.type))
        self.status.dns = dns
        if plan.conflicts:
            message = (
                "; ".join(plan.conflicts)
                + ". It is left as it is: delete it in Cloudflare, or set spec.dns.www: false "
                "(for www) or spec.dns.manage: false to manage DNS yourself"
            )
            known = any(
                c.type == "DNSReady" and c.reason == "RecordConflict"
                for c in self.status.conditions
            )
            self.condition("DNSReady", "False", "RecordConflict", message)
            if not known:
                self.event("RecordConflict", message, warning=True)
        elif not desired:
            self.condition("DNSReady", "True", "Unmanaged", "spec.dns.manage is false")
        else:
            names = sorted({w.name for w in desired})
            self.condition(
                "DNSReady", "True", "RecordsPointAtServer", f"{', '.join(names)} → {server.ipv4}"
            )

    def _record_fields(self, want: domains.DesiredRecord, tag: str) -> dict[str, Any]:
        return {
            "type": want.type,
            "name": want.name,
            "content": want.content,
            "ttl": self.domain.spec.dns.ttl,
            "proxied": self.domain.spec.dns.proxied,
            "comment": domains.record_comment(self.domain),
            "tags": [tag],
        }

    def check_agent(self) -> None:
        agent = self.status.agent or AgentStatus()
        seen = agent.last_seen
        limit = timedelta(seconds=self.settings.agent_timeout_seconds)
        if seen is not None and datetime.now(UTC) - seen <= limit:
            self.condition(
                "AgentConnected",
                "True",
                "Heartbeat",
                f"agent {agent.version or '?'} last seen {seen.isoformat()}",
            )
        elif seen is None:
            self.condition(
                "AgentConnected",
                "False",
                "WaitingForAgent",
                f"no heartbeat yet; the agent reports to {self.settings.intake_url}",
            )
        else:
            self.condition(
                "AgentConnected",
                "False",
                "AgentSilent",
                f"no heartbeat since {seen.isoformat()}",
            )

    # -- deletion ------------------------------------------------------------------------

    async def delete(self) -> None:
        """Remove DNS records, server and firewall; "not found" counts as done."""
        cloud = self.ctx.cloud
        if cloud is None:
            return
        labels = domains.cloud_labels(self.uid)
        dns = self.status.dns or DNSStatus()
        zone_id = dns.zone_id
        if zone_id is None:
            zone = await cloud.cloudflare.zone_for(self.domain.spec.domain)
            zone_id = zone.id if zone else None
        if zone_id is not None:
            for record in await cloud.cloudflare.records(zone_id, tag=domains.record_tag(self.uid)):
                await cloud.cloudflare.delete_record(zone_id, record.id)
            if dns.zone_created:
                await cloud.cloudflare.delete_zone(zone_id)
        for server in await cloud.hetzner.servers(labels):
            await cloud.hetzner.delete_server(server.id)
        cloud.fleet.forget(self.uid)
        for firewall in await cloud.hetzner.firewalls(labels):
            # Detaching takes a moment after the server is gone: "in use" heals.
            await cloud.hetzner.delete_firewall(firewall.id)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    @kopf.daemon(*DOMAINS, registry=registry, cancellation_timeout=10)
    async def domain_daemon(
        stopped: kopf.DaemonStopped,
        body: kopf.Body,
        uid: str,
        memo: kopf.Memo,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        ctx = context(memo)
        await reconcile_until_stopped(
            ctx, uid, stopped, "Domain", lambda: DomainReconciler(ctx, dict(body), logger).run()
        )

    @kopf.on.update(*DOMAINS, field="spec", registry=registry)
    async def domain_changed(uid: str, memo: kopf.Memo, **_: Any) -> None:
        wake(context(memo), uid)

    @kopf.on.delete(*DOMAINS, registry=registry)
    async def domain_deleted(
        body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        ctx = context(memo)
        with reconciling("Domain"):
            reconciler = DomainReconciler(ctx, dict(body), logger)
            reconciler.status.phase = None
            try:
                await reconciler.delete()
            except TemporaryProviderError as error:
                raise kopf.TemporaryError(str(error), delay=error.delay) from error
            except ProviderError as error:
                raise kopf.TemporaryError(f"{error}; retrying", delay=30) from error
            logger.info(
                "removed the server, firewall and DNS records of %s", body["spec"]["domain"]
            )
