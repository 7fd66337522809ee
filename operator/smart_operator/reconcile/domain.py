"""The Domain reconciler: ownership, firewall, server, DNS, agent; and deletion.

A pass runs the steps in order; each observes through the ports, decides with the
pure functions of ``smart_operator.domains``, and acts through the ports. A step
either hands its result to the next or returns ``Wait`` (stop here, pass again after
that many seconds). A provider failure inside a step becomes that step's condition:
``ProviderUnavailable`` (and a pass soon) when it heals, ``ProviderRejected`` (and
phase Failed until the spec or the configuration changes) when it does not.

Every step looks before it acts and marks what it makes with the Domain's uid, so the
operator can be killed at any instant and a restart continues where it stopped: no
duplicate server, no leaked record. The status is written at once after each step
that changed something the next one relies on (the server id first), and at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from smart_operator import certificates, domains, uptime
from smart_operator.accounts import ACCOUNT_LABEL, Unplaced
from smart_operator.agentbundle import DEPLOY_USER
from smart_operator.cloudinit import UserDataInput, render_user_data
from smart_operator.conditions import is_true, now, set_condition
from smart_operator.errors import (
    Conflict,
    ExternalError,
    NotFound,
    PermanentFailure,
    RateLimited,
    TemporaryFailure,
)
from smart_operator.keys import derive_server_keys, fingerprint, hash_intake_key, new_attempt
from smart_operator.models.common import ConditionStatus
from smart_operator.models.conditions import ConditionType, Reason
from smart_operator.models.customer import customer_of
from smart_operator.models.domain import (
    CertificateStatus,
    DNSRecordStatus,
    DNSStatus,
    Domain,
    DomainPhase,
    DomainStatus,
    ServerStatus,
    VerificationStatus,
)
from smart_operator.ports import (
    AgentEnvironment,
    AgentInstaller,
    CertificateAuthority,
    Cloud,
    Events,
    ObjectRef,
    Resources,
    ServerView,
    Target,
    ZoneView,
)
from smart_operator.reconcile.certificate import ZoneChallenges
from smart_operator.reconcile.status import StatusWriter
from smart_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
INTAKE_KEY_GENERATION = "smartserver.ai/intake-key-generation"
"""A Domain annotation: change its value to rotate the server's intake key."""
POLL_SECONDS = 2.0
"""How soon a pass comes again while a server starts."""


@dataclass(frozen=True)
class Wait:
    """Stop this pass; the next one comes after ``seconds``."""

    seconds: float


class DnsCheckSchedule:
    """When a steady Domain's records are checked again: every ``interval`` seconds,
    within a platform-wide allowance, so the Cloudflare calls per hour stay flat
    however many Domains there are. Shared by every Domain of the process."""

    def __init__(
        self,
        interval: float,
        allowance: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._allowance = allowance
        self._clock = clock
        self._checked: dict[str, float] = {}

    def due(self, uid: str) -> bool:
        checked = self._checked.get(uid, float("-inf"))
        if self._clock() - checked < self._interval:
            return False
        return self._allowance is None or self._allowance()

    def done(self, uid: str) -> None:
        self._checked[uid] = self._clock()

    def forget(self, uid: str) -> None:
        self._checked.pop(uid, None)


class DomainReconciler:
    """One pass over one Domain: ``run()`` returns the seconds until the next."""

    def __init__(
        self,
        domain: Domain,
        *,
        cloud: Cloud | None,
        settings: OperatorSettings,
        writer: StatusWriter[DomainStatus],
        events: Events,
        dns_schedule: DnsCheckSchedule,
        resources: Resources,
        installer: AgentInstaller | None = None,
        authority: CertificateAuthority | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        """``stopping``: true once the Domain is being deleted (kopf stops its daemon);
        the pass then makes nothing more, and the deletion waits for it to end."""
        self.domain = domain
        self.cloud = cloud
        self.settings = settings
        self.writer = writer
        self.events = events
        self.dns_schedule = dns_schedule
        self.resources = resources
        self.installer = installer
        self.authority = authority
        self.clock = clock
        self.stopping = stopping
        self.uid = domain.metadata.uid or ""
        self.generation = domain.metadata.generation
        read = domain.status or DomainStatus()
        self.steady = domains.is_steady(read, self.generation)
        self.verified = domains.is_verified(read, self.generation)
        self.status = read.model_copy(deep=True)
        self.status.observed_generation = self.generation
        self.alternatives = "another spec.server.location or spec.server.type"

    # -- status --------------------------------------------------------------------------

    def condition(
        self, type: ConditionType, status: ConditionStatus, reason: Reason, message: str
    ) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type, status, reason, message, self.generation
        )

    async def flush(self) -> None:
        """Write what changed so far (the next step relies on it being recorded)."""
        self.status = await self.writer.write(self.status)

    # -- the pass ------------------------------------------------------------------------

    async def run(self) -> float:
        delay = await self._pass()
        self.availability_condition()
        await self.flush()
        return delay

    def availability_condition(self) -> None:
        """``Available`` from the uptime checker's ``status.availability`` (none before
        the first check, or with the checks off)."""
        availability = self.status.availability
        if not self.settings.uptime_checks:  # turned off: no stale verdict stays
            self.status.conditions = [
                c for c in self.status.conditions if c.type != ConditionType.AVAILABLE
            ]
            return
        if availability is None:
            return
        self.condition(
            ConditionType.AVAILABLE, *uptime.verdict(availability, self.settings.uptime_seconds)
        )

    async def _pass(self) -> float:
        cloud = self.cloud
        if cloud is None:
            self.condition(
                ConditionType.SERVER_READY,
                "False",
                Reason.OPERATOR_NOT_CONFIGURED,
                "the operator has no cloud credentials: set SMART_HETZNER_TOKEN and "
                "SMART_CLOUDFLARE_TOKEN (Helm values hetzner.token, cloudflare.token)",
            )
            return self.settings.drift_seconds
        if self.domain.spec.paused:
            self.condition(
                ConditionType.PAUSED,
                "True",
                Reason.PAUSED_BY_SPEC,
                "spec.paused is true: the server is left as it is (nothing created, repaired "
                "or deployed) and serves only control variants",
            )
            return self.settings.drift_seconds
        self.condition(
            ConditionType.PAUSED, "False", Reason.ACTIVE, "reconciled and repaired as usual"
        )
        placed = await self._step(ConditionType.SERVER_READY, self.account(cloud))
        if isinstance(placed, Wait):
            return placed.seconds
        cloud = placed
        shape = await self._step(ConditionType.SERVER_READY, self.check_shape(cloud))
        if isinstance(shape, Wait):
            return shape.seconds
        zone = await self._step(ConditionType.VERIFIED, self.verify(cloud))
        if isinstance(zone, Wait):
            return zone.seconds
        server = await self._step(ConditionType.SERVER_READY, self.ensure_server(cloud))
        if isinstance(server, Wait):
            return server.seconds
        records = await self._step(ConditionType.DNS_READY, self.ensure_dns(cloud, zone, server))
        if isinstance(records, Wait):
            return records.seconds
        installed = await self._step(
            ConditionType.AGENT_INSTALLED, self.ensure_agent(cloud, server)
        )
        if isinstance(installed, Wait):
            return installed.seconds
        self.condition(
            ConditionType.AGENT_CONNECTED,
            *domains.agent_verdict(
                self.status.agent,
                self.clock(),
                self.settings.agent_timeout_seconds,
                self.settings.intake_url,
            ),
        )
        delay = domains.next_check(self.status, self.settings.drift_seconds)
        if self.settings.tls:
            delay = min(delay, await self.ensure_certificate(cloud, zone, server))
        return delay

    async def _step(self, type: ConditionType, work: Awaitable[T | Wait]) -> T | Wait:
        """Run one step; a provider failure becomes its condition and a ``Wait``."""
        try:
            return await work
        except ExternalError as error:
            failure = domains.provider_failure(
                error, self.settings.drift_seconds, self.alternatives
            )
            self.condition(type, "False", failure.reason, failure.message)
            return Wait(failure.retry_seconds)

    # -- steps ---------------------------------------------------------------------------

    def _made_anything(self) -> bool:
        """Whether an earlier pass (maybe of a version before the pool) made or found
        anything in a provider account for this Domain."""
        server, dns = self.status.server, self.status.dns
        return bool(
            (server and (server.id or server.firewall_id or server.create_attempt))
            or (dns and dns.zone_id)
        )

    async def account(self, cloud: Cloud) -> Cloud | Wait:
        """The provider account this Domain lives in: chosen once, before anything is
        made for it (by the pool's placement, or the Customer's pin), recorded on its
        status and labels, and used for every later call. A Domain that has things in
        an account from before the pool is on the pool's default account."""
        pool = cloud.pool
        if pool is None:
            return cloud
        name = self.status.account
        if name is None:
            if self._made_anything():
                name = pool.default
            else:
                customer = await self.customer()
                pin = ((customer or {}).get("spec") or {}).get("providerAccount")
                result = await pool.place(self.uid, str(pin) if pin else None)
                if isinstance(result, Unplaced):
                    self.condition(
                        ConditionType.SERVER_READY,
                        "False",
                        Reason.NO_PROVIDER_ACCOUNT,
                        f"{result.message}; tried again every {self.settings.drift_seconds:.0f} s",
                    )
                    return Wait(self.settings.drift_seconds)
                name = result.account
                self.events.post("Normal", "AccountChosen", f"placed on provider account {name}")
            self.status.account = name
            await self.flush()  # recorded before anything is made in it
        meta = self.domain.metadata
        if meta.labels.get(ACCOUNT_LABEL) != name:
            await self.resources.label(
                ObjectRef("domains", meta.name, meta.namespace), {ACCOUNT_LABEL: name}
            )
        chosen = pool.cloud(name)
        if chosen is None:
            self.condition(
                ConditionType.SERVER_READY,
                "False",
                Reason.NO_PROVIDER_ACCOUNT,
                f"the Domain is on provider account {name} (status.account), which the "
                f"operator no longer has: restore its Secret (label {ACCOUNT_LABEL}={name} "
                "in the operator's namespace); its server and records are there",
            )
            return Wait(self.settings.drift_seconds)
        pool.note(self.uid, name)
        return chosen

    async def check_shape(self, cloud: Cloud) -> Wait | None:
        """Server type and location against the provider's catalogue."""
        shape = self.domain.spec.server
        types = await cloud.catalog.types()
        self.alternatives = domains.alternatives(shape, types)
        problem = domains.shape_problem(shape, types)
        if problem is not None:
            self.condition(ConditionType.SERVER_READY, "False", Reason.INVALID_SPEC, problem)
            return Wait(self.settings.drift_seconds)
        server = self.status.server or ServerStatus()
        server.monthly_price = domains.monthly_price(shape, types)
        self.status.server = server
        return None

    async def verify(self, cloud: Cloud) -> ZoneView | Wait:
        """Ownership: the domain's zone is active in our Cloudflare account, which means
        its nameservers point at Cloudflare for us. A missing zone is created for the
        registrable domain (a subdomain's zone is its parent's). Once verified at this
        generation, later passes use the recorded zone without reading it and its owner
        record again (two requests a pass while the server boots): the DNS step's
        listing finds a zone deleted since (``zone_gone``)."""
        dns = self.status.dns or DNSStatus()
        if self.verified and dns.zone_id and dns.zone_name:
            return ZoneView(
                dns.zone_id,
                dns.zone_name,
                "active",
                list(dns.name_servers),
                dns.zone_plan or "free",
            )
        name = self.domain.spec.domain
        registrable = domains.registrable_domain(name)
        if registrable is None:
            self.condition(
                ConditionType.VERIFIED,
                "False",
                Reason.INVALID_SPEC,
                f"spec.domain {name} is a public suffix (like co.uk), which nobody owns and "
                "Cloudflare cannot hold: use a domain registered under it",
            )
            return Wait(self.settings.drift_seconds)
        customer = await self.customer_uid()
        if customer is None:
            self.condition(
                ConditionType.VERIFIED,
                "False",
                Reason.INVALID_SPEC,
                f"a Domain belongs to a Customer: create it in the Customer's namespace "
                f"(customer-<name>), not {self.domain.metadata.namespace}",
            )
            return Wait(self.settings.drift_seconds)
        zone = await self.known_zone(cloud, dns)
        if zone is None:
            zone = await cloud.dns.zone_for(name)
        if zone is None:
            zone = await cloud.dns.create_zone(registrable)
            dns.zone_created = True
            dns.activation_checked_at = None
            self.events.post("Normal", "ZoneCreated", f"created Cloudflare zone {zone.name}")
        dns.zone_id, dns.zone_name, dns.zone_plan = zone.id, zone.name, zone.plan
        dns.name_servers = zone.name_servers
        self.status.dns = dns
        claimed = await self.claim(cloud, zone, customer, made=bool(dns.zone_created))
        if claimed is not None:
            return claimed
        if zone.status != "active":
            return await self.wait_for_activation(cloud, zone, dns)
        dns.activation_checked_at = None
        verification = self.status.verification or VerificationStatus()
        verification.method = verification.method or self.domain.spec.verification.method
        verification.record_name = verification.record_value = None
        verification.verified_at = verification.verified_at or now()
        self.status.verification = verification
        self.condition(
            ConditionType.VERIFIED, "True", Reason.ZONE_ACTIVE, f"zone {zone.name} is active"
        )
        return zone

    async def customer(self) -> dict[str, Any] | None:
        """The Customer whose namespace the Domain is in; None outside one."""
        customer = customer_of(self.domain.metadata.namespace or "")
        if customer is None:
            return None
        return await self.resources.get(ObjectRef("customers", customer))

    async def customer_uid(self) -> str | None:
        """The uid of the Customer whose namespace the Domain is in; None outside one."""
        uid = ((await self.customer()) or {}).get("metadata", {}).get("uid")
        return str(uid) if uid else None

    async def claim(self, cloud: Cloud, zone: ZoneView, customer: str, made: bool) -> Wait | None:
        """A Domain may use only its own customer's zone. A zone made for this customer
        is claimed for it with an owner record; a zone another customer owns is refused;
        a zone nobody owns yet (added by staff) needs a challenge record that staff add
        in it, proving they grant it to this customer."""
        installation = cloud.identity.installation
        owner_name = domains.owner_record_name(zone.name)
        owners = [r.content for r in await cloud.dns.records(zone.id, name=owner_name)]
        claim = domains.zone_claim(owners, installation, customer)
        if claim == "ours":
            return None
        if claim == "foreign":
            self.condition(
                ConditionType.VERIFIED,
                "False",
                Reason.ZONE_OF_ANOTHER_CUSTOMER,
                f"zone {zone.name} belongs to another customer of the platform: a Domain may "
                "use only its own customer's zones. Use another domain, or have staff move "
                "the zone",
            )
            return Wait(self.settings.drift_seconds)
        if not made:
            challenge = domains.challenge_name(self.domain.spec.domain)
            value = domains.challenge_value(cloud.identity.key_secret, self.uid, customer)
            found = await cloud.dns.records(zone.id, name=challenge)
            if not any(r.type == "TXT" and r.content.strip('"') == value for r in found):
                self.status.verification = VerificationStatus(
                    method="txt", record_name=challenge, record_value=value
                )
                self.condition(
                    ConditionType.VERIFIED,
                    "False",
                    Reason.OWNERSHIP_CHALLENGE,
                    f"zone {zone.name} is in the platform's Cloudflare account but belongs to "
                    f"no customer yet: to grant it to this Domain's customer, staff add the TXT "
                    f"record {challenge} with the value {value} in it (checked every "
                    f"{self.settings.verify_seconds:.0f} s)",
                )
                return Wait(self.settings.verify_seconds)
            self.events.post(
                "Normal", "ZoneClaimed", f"zone {zone.name} granted by the challenge record"
            )
        await cloud.dns.batch(
            zone.id,
            posts=[
                {
                    "type": "TXT",
                    "name": owner_name,
                    "content": domains.owner_content(installation, customer),
                    "ttl": 3600,
                    "comment": domains.owner_comment(installation),
                }
            ],
            patches=[],
            deletes=[],
        )
        self.status.verification = VerificationStatus(
            method="txt" if not made else self.domain.spec.verification.method
        )
        return None

    async def known_zone(self, cloud: Cloud, dns: DNSStatus) -> ZoneView | None:
        """The zone the status names, as it is now; None when it is gone (Cloudflare
        deletes Free zones left pending for 28 days) and must be found or made again."""
        if dns.zone_id is None:
            return None
        try:
            return await cloud.dns.get_zone(dns.zone_id)
        except NotFound:
            dns.zone_id = None
            dns.zone_created = None
            return None

    async def wait_for_activation(self, cloud: Cloud, zone: ZoneView, dns: DNSStatus) -> Wait:
        """Cloudflare activates a zone on its own schedule once the registrar delegates
        it; asking it to check sooner is allowed once per plan interval."""
        interval = domains.activation_check_seconds(zone.plan)
        moment = self.clock()
        checked = dns.activation_checked_at
        if zone.status == "pending" and (
            checked is None or (moment - checked).total_seconds() >= interval
        ):
            try:
                await cloud.dns.check_activation(zone.id)
                dns.activation_checked_at = moment
            except RateLimited as refused:  # asked elsewhere: the API says when again
                dns.activation_checked_at = moment - timedelta(seconds=interval - refused.delay)
        self.condition(
            ConditionType.VERIFIED,
            "False",
            Reason.ZONE_MOVED if zone.status == "moved" else Reason.ZONE_PENDING,
            domains.pending_zone_message(zone, dns.activation_checked_at, interval),
        )
        return Wait(self.settings.verify_seconds)

    async def ensure_server(self, cloud: Cloud) -> ServerView | Wait:
        found = (
            await cloud.fleet.servers(self.uid, self.settings.drift_seconds) if self.steady else []
        )
        if not found:
            # Decisions to create are made on a fresh, exact answer, never on the cache.
            found = await cloud.servers.servers(domains.domain_labels(self.uid))
        known = self.status.server or ServerStatus()
        choice = domains.choose_server(found, known.id, known.create_attempt)
        for extra in choice.remove:
            await cloud.servers.delete_server(extra.id)
            self.events.post(
                "Warning",
                "DuplicateRemoved",
                f"removed server {extra.name} ({extra.id}): a second server of this Domain",
            )
        if choice.keep is None and self.stopping():
            return Wait(0)  # being deleted: make nothing more
        server = choice.keep or await self.create_server(cloud)
        attempt = server.labels.get(domains.ATTEMPT_LABEL)
        # (The status, not ``known``: a server this pass made is pinned already.)
        if attempt and attempt != (self.status.server or ServerStatus()).create_attempt:
            # A server made by an attempt the status does not record (its status was
            # lost, or written before the create's answer): its keys derive from it.
            self.pin_keys(cloud, attempt)
        self.status.server = self._server_status(server)
        cloud.fleet.remember(self.uid, server)
        await self.flush()
        verdict = domains.server_verdict(server)
        self.condition(ConditionType.SERVER_READY, *verdict)
        if verdict[0] != "True":
            return Wait(POLL_SECONDS)
        return server

    def pin_keys(self, cloud: Cloud, attempt: str) -> None:
        """Pin the host key of the server that ``attempt`` makes (from its user-data,
        until the first install rotates it)."""
        name = domains.cloud_name(self.domain)
        keys = derive_server_keys(
            cloud.identity.key_secret, self.uid, attempt, comment=f"root@{name}"
        )
        server = self.status.server or ServerStatus()
        server.create_attempt = attempt
        server.host_public_key = keys.host.public
        server.host_key_fingerprint = keys.host.fingerprint
        server.host_key_rotated = None
        server.next_host_public_key = None
        server.agent_sha256 = server.agent_version = server.agent_settings_hash = None
        server.operator_key_fingerprint = None  # whichever key its user-data had: checked
        self.status.server = server
        # A new server has no certificate (its key was on the old one only): issue anew.
        self.status.certificate = None

    async def ensure_firewall(self, cloud: Cloud) -> int:
        found = await cloud.servers.firewalls(domains.domain_labels(self.uid))
        if found:
            return found[0].id
        name = domains.cloud_name(self.domain, "-fw")
        sources = self.settings.ssh_sources
        if not sources:
            raise PermanentFailure(
                "operator",
                "SMART_SSH_SOURCES is empty: set the addresses the operator connects from, "
                "the only SSH sources the servers' firewalls allow",
            )
        labels = domains.cloud_labels(self.uid, cloud.identity.installation)
        try:
            return (await cloud.servers.create_firewall(name, labels, sources)).id
        except Conflict:
            existing = await cloud.servers.firewall_by_name(name)
            if existing is not None and existing.labels.get(domains.UID_LABEL) == self.uid:
                return existing.id
            raise PermanentFailure(
                "hetzner",
                f"a firewall named {name} exists that Smart Server did not make for this "
                "Domain; delete or rename it",
            ) from None

    async def create_server(self, cloud: Cloud) -> ServerView:
        previous = self.status.server
        if previous and previous.id:
            self.events.post(
                "Warning",
                "ServerMissing",
                f"server {previous.name} ({previous.id}) is gone; creating a new one",
            )
        firewall = await self.ensure_firewall(cloud)
        identity = cloud.identity
        if cloud.ssh_key_id is None:
            cloud.ssh_key_id = await cloud.servers.ensure_ssh_key(
                identity.ssh_key.public, domains.managed_labels(identity.installation)
            )
            await self.forget_previous_key(cloud)
        name = domains.cloud_name(self.domain)
        # Recorded before asking, and reused until the server is known: if the answer
        # is lost, the server found later by its label carries exactly these keys.
        attempt = domains.create_attempt(previous) or new_attempt()
        self.status.server = ServerStatus(
            name=name,
            firewall_id=firewall,
            create_requested_at=(previous.create_requested_at if previous else None) or now(),
            monthly_price=previous.monthly_price if previous else None,
        )
        self.pin_keys(cloud, attempt)
        # The user-data below authorizes the current key (until the pin above is
        # replaced, this attempt's server is the one its user-data made).
        self.status.server.operator_key_fingerprint = identity.ssh_key.fingerprint
        self.condition(
            ConditionType.SERVER_READY, "False", Reason.CREATING, f"creating server {name}"
        )
        await self.flush()
        keys = derive_server_keys(identity.key_secret, self.uid, attempt, comment=f"root@{name}")
        user_data = render_user_data(
            UserDataInput(
                hostname=name,
                domain=self.domain.spec.domain,
                host_private_key=keys.host.private,
                host_public_key=keys.host.public,
                operator_public_key=identity.ssh_key.public,
                ssh_sources=self.settings.ssh_sources,
            )
        )
        shape = self.domain.spec.server
        if self.stopping():
            raise TemporaryFailure("operator", "the Domain is being deleted", 0)
        try:
            server, action = await cloud.servers.create_server(
                name=name,
                server_type=shape.type,
                image=shape.image,
                location=shape.location,
                user_data=user_data,
                labels=domains.cloud_labels(self.uid, identity.installation, attempt),
                ssh_key_ids=[cloud.ssh_key_id],
                firewall_ids=[firewall],
            )
        except PermanentFailure as error:
            if error.code == "resource_limit_exceeded" and cloud.pool is not None:
                # The project's limit is lower than its server-quota says: the next
                # Domains go elsewhere for a while.
                cloud.pool.exhausted(cloud.account)
            raise
        except Conflict:
            existing = await cloud.servers.server_by_name(name)
            if existing is None or existing.labels.get(domains.UID_LABEL) != self.uid:
                raise PermanentFailure(
                    "hetzner",
                    f"a server named {name} exists that Smart Server did not make for this "
                    "Domain; delete or rename it",
                ) from None
            if existing.labels.get(domains.ATTEMPT_LABEL):
                # Ours, with keys derived from its attempt; made by an earlier request,
                # maybe with an operator key rotated since: checked before use.
                self.status.server.operator_key_fingerprint = None
                return existing
            # Ours, but nobody knows its keys: it would refuse every deploy.
            await cloud.servers.delete_server(existing.id)
            raise TemporaryFailure(
                "hetzner", f"replacing server {name}, whose keys are unknown", 5
            ) from None
        self.events.post("Normal", "ServerCreated", f"created server {server.name} ({server.id})")
        self.status.server = self._server_status(server)
        await self.flush()  # the id, at once
        if action is not None:
            outcome = await cloud.actions.wait(action)
            if outcome != "success":
                # It never ran: remove it, and make a new one (new keys) next time.
                await cloud.servers.delete_server(server.id)
                self.status.server = ServerStatus(
                    name=name, firewall_id=firewall, monthly_price=self.status.server.monthly_price
                )
                raise TemporaryFailure(
                    "hetzner",
                    f"server {name} ({server.id}) failed to start (its create action ended "
                    "in an error); it was removed",
                    30,
                    "action_failed",
                )
            server = await cloud.servers.server(server.id)
        return server

    async def forget_previous_key(self, cloud: Cloud) -> None:
        """After a rotation, the previous key's object at Hetzner goes: Hetzner uses it
        only to create servers, and new ones get the current key (existing servers keep
        what they authorize, and are moved by ``ensure_operator_key``). Only this
        installation's registration is removed; a failure is logged, not fatal."""
        identity = cloud.identity
        if identity.previous_ssh_key is None:
            return
        try:
            removed = await cloud.servers.delete_ssh_key(
                identity.previous_ssh_key.public, domains.managed_labels(identity.installation)
            )
        except ExternalError as error:
            log.warning("the previous operator key stays at Hetzner: %s", error)
            return
        if removed:
            log.info(
                "removed the previous operator key %s from Hetzner",
                identity.previous_ssh_key.fingerprint,
            )

    def _server_status(self, server: ServerView) -> ServerStatus:
        previous = self.status.server or ServerStatus()
        return ServerStatus(
            id=server.id,
            name=server.name,
            ipv4=server.ipv4,
            ipv6=server.ipv6,
            status=server.status,
            firewall_id=previous.firewall_id,
            create_attempt=previous.create_attempt,
            host_public_key=previous.host_public_key,
            host_key_rotated=previous.host_key_rotated,
            next_host_public_key=previous.next_host_public_key,
            agent_sha256=previous.agent_sha256,
            agent_version=previous.agent_version,
            agent_settings_hash=previous.agent_settings_hash,
            host_key_fingerprint=previous.host_key_fingerprint
            or (fingerprint(previous.host_public_key) if previous.host_public_key else None),
            monthly_price=previous.monthly_price,
            operator_key_fingerprint=previous.operator_key_fingerprint,
        )

    async def ensure_agent(self, cloud: Cloud, server: ServerView) -> Wait | None:
        """The agent, delivered over the pinned connection as a hash-checked bundle with
        its environment (the intake key never travels in the user-data); then, once, the
        host key replaced by one made on the server. Nothing is done when the server has
        the bundle and the intake key of the current generation, rotated."""
        installer = self.installer
        if installer is None:
            self.condition(
                ConditionType.AGENT_INSTALLED,
                "False",
                Reason.NO_AGENT_BUNDLE,
                "the operator has no agent bundle to deliver: set SMART_AGENT_BUNDLE (the "
                "platform's image carries one)",
            )
            return Wait(self.settings.drift_seconds)
        known = self.status.server or ServerStatus()
        generation = self.domain.metadata.annotations.get(INTAKE_KEY_GENERATION, "")
        keys = derive_server_keys(
            cloud.identity.key_secret, self.uid, known.create_attempt or "", generation=generation
        )
        wanted = hash_intake_key(keys.intake)
        extra = {
            # The site's HTTPS and proxy settings; the operator's own agent settings may
            # override them.
            "PROXIED": "true" if self.domain.spec.dns.proxied else "false",
            "HSTS_MAX_AGE": str(self.settings.hsts_max_age),
            **self.settings.agent_settings,
        }
        settings_hash = hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:16]

        def installed() -> bool:
            known = self.status.server or ServerStatus()
            return (
                known.agent_sha256 == installer.bundle_sha256
                and self.status.intake_key_hash == wanted
                and bool(known.host_key_rotated)
                and known.agent_settings_hash == settings_hash
            )

        operator_key = cloud.identity.ssh_key.fingerprint
        if installed() and known.operator_key_fingerprint == operator_key:
            self._agent_installed()
            return None
        target = self.target(cloud, server)
        if known.next_host_public_key:  # a rotation whose end was not recorded
            await self.commit_rotation(cloud, target, known.next_host_public_key)
            target = self.target(cloud, server)
        await self.ensure_operator_key(cloud, server, target)
        if installed():
            self._agent_installed()
            return None
        # The hash first: the agent's reports are accepted as soon as it uses the key.
        # And say what is going on: an install waits for cloud-init, then uploads and
        # installs the bundle (seconds on an idle server, minutes on a busy one).
        self.status.intake_key_hash = wanted
        self.condition(
            ConditionType.AGENT_INSTALLED,
            "False",
            Reason.INSTALLING,
            f"delivering the agent (bundle {installer.bundle_sha256[:12]}) to {server.name} "
            "over SSH, once its cloud-init is done",
        )
        await self.flush()
        environment = AgentEnvironment(
            intake_url=self.settings.intake_url,
            intake_key=keys.intake,
            domain=self.domain.spec.domain,
            resource=f"{self.domain.metadata.namespace}/{self.domain.metadata.name}",
            extra=extra,
        )
        result = await installer.install(target, environment)
        known = self.status.server or ServerStatus()
        known.agent_sha256, known.agent_version = result.sha256, result.version
        known.agent_settings_hash = settings_hash
        self.status.server = known
        await self.flush()
        if not known.host_key_rotated:
            upcoming = await installer.prepare_host_key_rotation(target)
            known.next_host_public_key = upcoming
            await self.flush()
            await self.commit_rotation(cloud, target, upcoming)
        self.condition(
            ConditionType.AGENT_INSTALLED,
            "True",
            Reason.INSTALLED,
            f"agent {result.version} installed (bundle {result.sha256[:12]}), host key "
            f"{(self.status.server or ServerStatus()).host_key_fingerprint}",
        )
        return None

    async def ensure_certificate(self, cloud: Cloud, zone: ZoneView, server: ServerView) -> float:
        """The site's certificate for the apex and ``www``: issued by ACME with DNS-01
        records in the Domain's zone (before the server needs it, proxied or not),
        delivered with its key over the pinned SSH connection only, and renewed at two
        thirds of its lifetime; a failure is retried with backoff, warned about while the
        installed certificate still serves. Returns the seconds until it needs a look."""
        authority, installer = self.authority, self.installer
        if authority is None or installer is None:
            self.condition(
                ConditionType.CERTIFICATE_READY,
                "False",
                Reason.ACME_NOT_CONFIGURED,
                "the operator has no ACME CA or no agent bundle: the site is served over "
                "plain HTTP (set SMART_ACME_DIRECTORY_URL, or SMART_TLS=false to say so)",
            )
            return self.settings.drift_seconds
        known = self.status.certificate or CertificateStatus()
        names = certificates.certificate_names(self.domain.spec.domain)
        now = self.clock()
        state = certificates.CertificateState(
            known.not_before if known.names == names else None,
            known.not_after if known.names == names else None,
            known.serial,
            known.failures,
            known.last_attempt,
        )
        if not certificates.due(state, self.uid, now):
            if known.failures == 0 and known.not_after is not None:
                self._certificate_ready(known)
            return max(1.0, certificates.seconds_until_due(state, self.uid, now))
        known.last_attempt = now
        try:
            comment = domains.record_comment(self.domain, cloud.identity.installation, zone.plan)
            challenges = ZoneChallenges(cloud.dns, zone.id, self.uid, comment)
            issued = await authority.issue(names, challenges)
            await installer.install_certificate(self.target(cloud, server), issued)
        except ExternalError as error:
            known.failures += 1
            self.status.certificate = known
            certificates.FAILURES.inc()
            retry = certificates.retry_delay(known.failures, known.not_after, now)
            serving = known.not_after is not None and now < known.not_after
            still = (
                f"; the installed certificate serves until {known.not_after:%Y-%m-%dT%H:%M:%SZ}"
                if serving and known.not_after
                else "; the site is served over plain HTTP meanwhile"
            )
            self.condition(
                ConditionType.CERTIFICATE_READY,
                "True" if serving else "False",
                Reason.RENEWAL_FAILED,
                f"attempt {known.failures} failed: {error}{still}; next attempt in {retry:.0f} s",
            )
            return retry
        leaf_serial = _serial(issued.fullchain_pem)
        known = CertificateStatus(
            names=names,
            serial=leaf_serial,
            issuer=_issuer(issued.fullchain_pem),
            not_before=issued.not_before,
            not_after=issued.not_after,
            renew_after=certificates.renewal_time(
                issued.not_before, issued.not_after, f"{self.uid}:{leaf_serial}"
            ),
            failures=0,
            last_attempt=now,
        )
        self.status.certificate = known
        certificates.ISSUED.inc()
        self.events.post(
            "Normal",
            "CertificateIssued",
            f"certificate for {', '.join(names)} installed, "
            f"{certificates.expiry_message(issued.not_after)}",
        )
        self._certificate_ready(known)
        state = certificates.CertificateState(issued.not_before, issued.not_after, leaf_serial)
        return max(1.0, certificates.seconds_until_due(state, self.uid, now))

    def _agent_installed(self) -> None:
        """The agent is installed as wanted: say so, unless the condition says it already
        (a failure of an earlier pass, since healed, is replaced)."""
        if is_true(self.status.conditions, ConditionType.AGENT_INSTALLED):
            return
        known = self.status.server or ServerStatus()
        self.condition(
            ConditionType.AGENT_INSTALLED,
            "True",
            Reason.INSTALLED,
            f"agent {known.agent_version} installed (bundle {(known.agent_sha256 or '')[:12]}), "
            f"host key {known.host_key_fingerprint}",
        )

    async def ensure_operator_key(self, cloud: Cloud, server: ServerView, target: Target) -> None:
        """The server accepts the operator's current SSH key. Looked at (one connection)
        only when the status does not record it: after the key in the Secret was rotated,
        or for a server whose key nobody recorded. A server that accepts only the
        previous key is moved to the current one over that connection (the installer
        proves the new key before it removes the old). Neither key accepted
        (``OperatorKeyRefused``): the condition, and its Warning Event, name the
        fingerprints tried and what to do."""
        assert self.installer is not None
        known = self.status.server or ServerStatus()
        if known.operator_key_fingerprint == cloud.identity.ssh_key.fingerprint:
            return
        check = await self.installer.ensure_operator_key(target)
        known = self.status.server or ServerStatus()
        known.operator_key_fingerprint = check.accepted
        self.status.server = known
        await self.flush()
        if check.replaced is not None:
            self.events.post(
                "Normal",
                "OperatorKeyRotated",
                f"server {server.name} now authorizes the operator's key {check.accepted} "
                f"in place of the previous key {check.replaced} (proven by a new connection)",
            )

    def _certificate_ready(self, known: CertificateStatus) -> None:
        assert known.not_after is not None
        certificates.EXPIRY.labels(
            self.domain.metadata.namespace or "", self.domain.metadata.name
        ).set(known.not_after.timestamp())
        renew = (
            f", renewal after {known.renew_after:%Y-%m-%dT%H:%M:%SZ}" if known.renew_after else ""
        )
        self.condition(
            ConditionType.CERTIFICATE_READY,
            "True",
            Reason.CERTIFICATE_ISSUED,
            f"{', '.join(known.names)}: {certificates.expiry_message(known.not_after)}{renew}",
        )

    async def commit_rotation(self, cloud: Cloud, target: Target, upcoming: str) -> None:
        """Make the prepared host key the server's, and the pin."""
        assert self.installer is not None
        committed = await self.installer.commit_host_key_rotation(target, upcoming)
        known = self.status.server or ServerStatus()
        known.host_public_key = committed
        known.host_key_fingerprint = fingerprint(committed)
        known.next_host_public_key = None
        known.host_key_rotated = True
        self.status.server = known
        await self.flush()
        self.events.post(
            "Normal",
            "HostKeyRotated",
            f"the server's host key is now one made on it: {known.host_key_fingerprint}",
        )

    def target(self, cloud: Cloud, server: ServerView) -> Target:
        known = self.status.server or ServerStatus()
        return Target(
            address=server.ipv4 or "",
            port=self.settings.ssh_port,
            host_public_key=known.host_public_key or "",
            client_private_key=cloud.identity.ssh_key.private,
            username=DEPLOY_USER,
            server_id=server.id,
            previous_client_private_key=(
                cloud.identity.previous_ssh_key.private if cloud.identity.previous_ssh_key else None
            ),
        )

    async def ensure_dns(self, cloud: Cloud, zone: ZoneView, server: ServerView) -> Wait | None:
        """Our records point at the server; records that are not ours are never touched.
        One listing of the zone and at most one batch of changes. A steady Domain whose
        recorded records are the ones it wants is checked every ``dns_drift_seconds``,
        within the platform-wide allowance; a changed server is pointed at at once."""
        desired = domains.desired_records(self.domain, server.ipv4, server.ipv6)
        recorded = (self.status.dns or DNSStatus()).records
        routine = self.steady and domains.records_recorded(desired, recorded)
        if routine and not self.dns_schedule.due(self.uid):
            return None
        try:
            listed = await cloud.dns.records(zone.id)
        except NotFound:
            return self.zone_gone(zone)
        except TemporaryFailure as error:
            if not routine:
                raise
            # A routine check of records that were right: one 429 or 502 says nothing
            # about them. Keep the condition; the check comes again at its next turn.
            log.info("DNS check of %s deferred: %s", self.domain.spec.domain, error)
            return None
        existing = [
            domains.ExistingRecord(r.id, r.type, r.name, r.content, tuple(r.tags), r.comment)
            for r in listed
        ]
        plan = domains.plan_records(desired, existing, self.uid)
        settled = [
            DNSRecordStatus(id=r.id, type=r.type, name=r.name, content=r.content) for r in plan.kept
        ]
        if not plan.empty and self.stopping():
            return Wait(0)  # being deleted: its records are about to go
        if not plan.empty:
            changed = await cloud.dns.batch(
                zone.id,
                posts=[self._record_fields(want, cloud, zone) for want in plan.create],
                patches=[
                    {"id": record_id, **self._record_fields(want, cloud, zone)}
                    for record_id, want in plan.update
                ],
                deletes=plan.delete,
            )
            settled += [
                DNSRecordStatus(id=r.id, type=r.type, name=r.name, content=r.content)
                for r in changed
            ]
            if plan.update:
                self.events.post(
                    "Normal",
                    "RecordRepaired",
                    ", ".join(f"{w.type} {w.name} → {w.content}" for _, w in plan.update),
                )
        self.dns_schedule.done(self.uid)
        dns = self.status.dns or DNSStatus()
        dns.records = sorted(settled, key=lambda r: (r.name, r.type))
        self.status.dns = dns
        self.condition(
            ConditionType.DNS_READY, *domains.records_verdict(plan, desired, server.ipv4)
        )
        return None

    def zone_gone(self, zone: ZoneView) -> Wait:
        """The zone was deleted in Cloudflare behind the operator's back (by staff, or by
        Cloudflare once the domain moved away): a steady Domain uses its recorded zone
        without reading it, so only its DNS check finds out. Verify anew at once, which
        finds or makes the zone again; a new zone has new nameservers to set at the
        registrar (``ZonePending`` names them)."""
        dns = self.status.dns or DNSStatus()
        dns.zone_id = dns.zone_created = None
        self.status.dns = dns
        message = (
            f"zone {zone.name} is no longer in the Cloudflare account (deleted there): it is "
            "found or made again, and its nameservers checked"
        )
        self.condition(ConditionType.VERIFIED, "False", Reason.ZONE_GONE, message)
        self.events.post("Warning", "ZoneGone", message)
        return Wait(0)

    def _record_fields(
        self, want: domains.DesiredRecord, cloud: Cloud, zone: ZoneView
    ) -> dict[str, Any]:
        """A record as we make it: marked as ours in its comment (every plan allows one),
        with a tag too only where the zone's plan allows tags."""
        fields: dict[str, Any] = {
            "type": want.type,
            "name": want.name,
            "content": want.content,
            "ttl": self.domain.spec.dns.ttl,
            "proxied": self.domain.spec.dns.proxied,
            "comment": domains.record_comment(self.domain, cloud.identity.installation, zone.plan),
        }
        if domains.plan_limits(zone.plan).tags:
            fields["tags"] = [domains.record_tag(self.uid)]
        return fields

    # -- deletion ------------------------------------------------------------------------

    async def _delete_records(self, cloud: Cloud, zone_id: str, zone_created: bool) -> None:
        """Remove this Domain's records; a zone we made goes with it only if nothing
        else lives in it (the customer's own records, another Domain's)."""
        try:
            records = await cloud.dns.records(zone_id)
        except NotFound:  # the zone is gone (a retried deletion that removed it)
            return
        others = 0
        for record in records:
            existing = domains.ExistingRecord(
                record.id, record.type, record.name, record.content, tuple(record.tags),
                record.comment,
            )  # fmt: skip
            if existing.owned_by(self.uid):
                await cloud.dns.delete_record(zone_id, record.id)
            elif domains.parse_owner(record.content) is None:  # the owner record goes
                others += 1  # with the zone; anything else keeps it
        if zone_created and others == 0:
            await cloud.dns.delete_zone(zone_id)

    async def delete(self) -> None:
        """Remove DNS records, server and firewall; "not found" counts as done. The
        phase says ``Deleting`` meanwhile."""
        self.status.phase = DomainPhase.DELETING
        await self.flush()
        cloud = self.cloud
        if cloud is None:
            return
        if cloud.pool is not None:
            pool = cloud.pool
            name = self.status.account or pool.default
            chosen = pool.cloud(name)
            if chosen is None:
                raise TemporaryFailure(
                    "operator",
                    f"the Domain's server and records are in provider account {name}, which "
                    f"the operator no longer has: restore its Secret (label {ACCOUNT_LABEL}="
                    f"{name}) so they can be removed",
                    60,
                )
            cloud = chosen
        labels = domains.domain_labels(self.uid)
        dns = self.status.dns or DNSStatus()
        zone_id = dns.zone_id
        if zone_id is None:
            zone = await cloud.dns.zone_for(self.domain.spec.domain)
            zone_id = zone.id if zone else None
        if zone_id is not None:
            await self._delete_records(cloud, zone_id, bool(dns.zone_created))
        for server in await cloud.servers.servers(labels):
            await cloud.servers.delete_server(server.id)
        cloud.fleet.forget(self.uid)
        self.dns_schedule.forget(self.uid)
        for firewall in await cloud.servers.firewalls(labels):
            await cloud.servers.delete_firewall(firewall.id)
        if cloud.pool is not None:
            cloud.pool.forget(self.uid)


def _serial(fullchain_pem: str) -> str:
    return format(certificates.leaf(fullchain_pem).serial_number, "x")


def _issuer(fullchain_pem: str) -> str:
    return certificates.leaf(fullchain_pem).issuer.rfc4514_string()[:200]
