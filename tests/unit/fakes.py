"""In-memory fakes of the reconcilers' ports (``smart_operator.ports``), for driving the
reconcilers without a cluster or a provider.

Each fake keeps the state a real provider would (servers, firewalls, zones, records,
objects and their status) and can be told to fail the next calls of a verb with any
error of ``smart_operator.errors`` (``fail(verb, error, times)``). A ``lost`` create
makes the object and then raises, as when the answer is lost on the way back.
"""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smart_operator.domains import registrable_domain, zone_candidates
from smart_operator.errors import (
    Conflict,
    ExternalError,
    HostKeyMismatch,
    NotFound,
    OperatorKeyRefused,
    PermanentFailure,
    TemporaryFailure,
)
from smart_operator.keys import fingerprint, generate_ssh_key, public_key_of, same_key
from smart_operator.ports import (
    AgentEnvironment,
    ChallengeRecords,
    Cloud,
    DeployResult,
    EventType,
    FirewallView,
    Identity,
    InstallResult,
    IssuedCertificate,
    ObjectRef,
    OperatorKeyCheck,
    QuotaView,
    RecordView,
    ServerTypeView,
    ServerView,
    Target,
    ZoneView,
)
from smart_operator.templates.catalog import all_builtins, catalog_object

LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


class Failing:
    """Errors to raise on the next calls of a verb."""

    def __init__(self) -> None:
        self._failures: dict[str, list[ExternalError]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)

    def fail(self, verb: str, error: ExternalError, times: int = 1) -> None:
        self._failures[verb].extend([error] * times)

    def _call(self, verb: str) -> None:
        self.calls[verb] += 1
        if self._failures[verb]:
            raise self._failures[verb].pop(0)


class FakeServers(Failing):
    """Hetzner Cloud: servers start ``running`` unless ``boot_status`` says otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.servers_by_id: dict[int, ServerView] = {}
        self.firewalls_by_id: dict[int, FirewallView] = {}
        self.user_data: dict[int, str] = {}
        self.ssh_keys: dict[str, int] = {}
        self.ssh_key_labels: dict[str, dict[str, str]] = {}
        self.lose_next_create = False
        self.hide_next_listing = False
        """The next listing misses every server (a create still in flight)."""
        self.boot_status = "running"
        self._ids = itertools.count(100)

    def _match(self, labels: dict[str, str], wanted: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in wanted.items())

    async def servers(self, labels: dict[str, str]) -> list[ServerView]:
        self._call("servers")
        if self.hide_next_listing:
            self.hide_next_listing = False
            return []
        return [s for s in self.servers_by_id.values() if self._match(s.labels, labels)]

    async def server(self, server_id: int) -> ServerView:
        self._call("server")
        if server_id not in self.servers_by_id:
            raise NotFound("hetzner", f"server {server_id}")
        return self.servers_by_id[server_id]

    async def server_by_name(self, name: str) -> ServerView | None:
        self._call("server_by_name")
        return next((s for s in self.servers_by_id.values() if s.name == name), None)

    def add_server(
        self,
        name: str,
        labels: dict[str, str],
        created: datetime = LONG_AGO,
        user_data: str | None = None,
    ) -> int:
        server_id = next(self._ids)
        self.servers_by_id[server_id] = ServerView(
            server_id,
            name,
            self.boot_status,
            f"198.18.0.{server_id % 250}",
            None,
            dict(labels),
            "cx23",
            created,
        )
        if user_data is not None:
            self.user_data[server_id] = user_data
        return server_id

    async def create_server(
        self,
        *,
        name: str,
        server_type: str,
        image: str,
        location: str,
        user_data: str,
        labels: dict[str, str],
        ssh_key_ids: Iterable[int],
        firewall_ids: Iterable[int],
    ) -> tuple[ServerView, int | None]:
        self._call("create_server")
        if any(s.name == name for s in self.servers_by_id.values()):
            raise Conflict("hetzner", f"server name {name} is already used")
        server_id = self.add_server(name, labels, datetime.now(UTC))
        self.user_data[server_id] = user_data
        if self.lose_next_create:
            self.lose_next_create = False
            raise TemporaryFailure("hetzner", "create_server: the connection was reset")
        return self.servers_by_id[server_id], 7000 + server_id

    async def delete_server(self, server_id: int) -> None:
        self._call("delete_server")
        self.servers_by_id.pop(server_id, None)

    async def firewalls(self, labels: dict[str, str]) -> list[FirewallView]:
        self._call("firewalls")
        return [f for f in self.firewalls_by_id.values() if self._match(f.labels, labels)]

    async def firewall_by_name(self, name: str) -> FirewallView | None:
        self._call("firewall_by_name")
        return next((f for f in self.firewalls_by_id.values() if f.name == name), None)

    async def create_firewall(
        self, name: str, labels: dict[str, str], ssh_sources: list[str]
    ) -> FirewallView:
        self._call("create_firewall")
        if any(f.name == name for f in self.firewalls_by_id.values()):
            raise Conflict("hetzner", f"firewall name {name} is already used")
        firewall = FirewallView(next(self._ids), name, dict(labels), datetime.now(UTC))
        self.firewalls_by_id[firewall.id] = firewall
        return firewall

    async def delete_firewall(self, firewall_id: int) -> None:
        self._call("delete_firewall")
        self.firewalls_by_id.pop(firewall_id, None)

    async def ensure_ssh_key(self, public_key: str, labels: dict[str, str]) -> int:
        self._call("ensure_ssh_key")
        self.ssh_key_labels.setdefault(public_key, dict(labels))
        return self.ssh_keys.setdefault(public_key, next(self._ids))

    async def delete_ssh_key(self, public_key: str, labels: dict[str, str]) -> bool:
        self._call("delete_ssh_key")
        if public_key not in self.ssh_keys or not self._match(
            self.ssh_key_labels.get(public_key, {}), labels
        ):
            return False
        del self.ssh_keys[public_key]
        return True


class FakeDns(Failing):
    """Cloudflare: zones by name; a zone is active once ``delegated``."""

    def __init__(self) -> None:
        super().__init__()
        self.zones_by_id: dict[str, ZoneView] = {}
        self.records_by_zone: dict[str, dict[str, RecordView]] = defaultdict(dict)
        self.delegated: set[str] = set()
        self.activation_checks = 0
        self._ids = itertools.count(1)

    def add_zone(self, name: str, active: bool = True, plan: str = "free") -> ZoneView:
        zone = ZoneView(
            f"z{next(self._ids)}",
            name,
            "active" if active else "pending",
            ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
            plan,
        )
        self.zones_by_id[zone.id] = zone
        return zone

    def add_record(
        self,
        zone_id: str,
        type: str,
        name: str,
        content: str,
        tags: list[str],
        comment: str | None = None,
    ) -> str:
        zone = self.zones_by_id[zone_id]
        if tags and zone.plan == "free":  # as Cloudflare refuses them (1004/9300)
            raise PermanentFailure("cloudflare", "DNS record has 1 tags, exceeding the quota of 0")
        if comment and zone.plan == "free" and len(comment) > 100:
            raise PermanentFailure("cloudflare", "DNS record comment is too long")
        record = RecordView(f"r{next(self._ids)}", type, name, content, comment, list(tags))
        self.records_by_zone[zone_id][record.id] = record
        return record.id

    def all_records(self, zone_id: str) -> list[RecordView]:
        return list(self.records_by_zone[zone_id].values())

    async def zones(self) -> list[ZoneView]:
        self._call("zones")
        return list(self.zones_by_id.values())

    async def zone_for(self, domain: str) -> ZoneView | None:
        self._call("zone_for")
        for name in zone_candidates(domain):
            found = next((z for z in self.zones_by_id.values() if z.name == name), None)
            if found is not None:
                return found
        return None

    async def create_zone(self, name: str) -> ZoneView:
        self._call("create_zone")
        if registrable_domain(name) != name:  # as Cloudflare refuses (1116, 1099)
            raise PermanentFailure("cloudflare", f"{name} is not a registrable domain")
        return self.add_zone(name, active=False)

    async def get_zone(self, zone_id: str) -> ZoneView:
        """A delegated zone turns active on Cloudflare's own schedule: here, by the
        next read."""
        self._call("get_zone")
        if zone_id not in self.zones_by_id:
            raise NotFound("cloudflare", f"zone {zone_id}")
        zone = self.zones_by_id[zone_id]
        if zone.name in self.delegated and zone.status == "pending":
            zone = ZoneView(zone.id, zone.name, "active", zone.name_servers, zone.plan)
            self.zones_by_id[zone_id] = zone
        return zone

    async def check_activation(self, zone_id: str) -> None:
        self._call("check_activation")
        self.activation_checks += 1

    async def delete_zone(self, zone_id: str) -> None:
        self._call("delete_zone")
        self.zones_by_id.pop(zone_id, None)
        self.records_by_zone.pop(zone_id, None)

    async def records(
        self,
        zone_id: str,
        *,
        name: str | None = None,
        tag: str | None = None,
        tag_present: str | None = None,
        comment_prefix: str | None = None,
    ) -> list[RecordView]:
        self._call("records")
        if zone_id not in self.zones_by_id:  # Cloudflare: 400 with 7003, the client's NotFound
            raise NotFound("cloudflare", f"zone {zone_id}")
        found = self.all_records(zone_id)
        if comment_prefix is not None:
            found = [r for r in found if (r.comment or "").startswith(comment_prefix)]
        if name is not None:
            found = [r for r in found if r.name == name]
        if tag is not None:
            found = [r for r in found if tag in r.tags]
        if tag_present is not None:
            found = [r for r in found if any(t.startswith(f"{tag_present}:") for t in r.tags)]
        return found

    async def delete_record(self, zone_id: str, record_id: str) -> None:
        self._call("delete_record")
        self.records_by_zone[zone_id].pop(record_id, None)

    async def batch(
        self,
        zone_id: str,
        *,
        posts: list[dict[str, Any]],
        patches: list[dict[str, Any]],
        deletes: list[str],
    ) -> list[RecordView]:
        self._call("batch")
        records = self.records_by_zone[zone_id]
        for record_id in deletes:
            records.pop(record_id, None)
        changed = []
        for patch in patches:
            old = records[patch["id"]]
            new = RecordView(
                old.id, patch["type"], patch["name"], patch["content"], patch["comment"],
                list(patch.get("tags", [])),
            )  # fmt: skip
            records[old.id] = new
            changed.append(new)
        for post in posts:
            record_id = self.add_record(
                zone_id,
                post["type"],
                post["name"],
                post["content"],
                post.get("tags", []),
                post.get("comment"),
            )
            changed.append(records[record_id])
        return changed


class FakeActions:
    def __init__(self, outcome: str = "success") -> None:
        self.outcome = outcome

    async def wait(self, action_id: int) -> str:
        return self.outcome


class FakeFleet:
    """The shared listing: serves from the provider fake (fresh every time)."""

    def __init__(self, servers: FakeServers) -> None:
        self._servers = servers
        self.listings = 0

    async def servers(self, uid: str, max_age: float) -> list[ServerView]:
        self.listings += 1
        return [s for s in self._servers.servers_by_id.values() if s.labels.get(
            "smartserver.ai/uid") == uid]  # fmt: skip

    def remember(self, uid: str, server: ServerView) -> None:
        return None

    def forget(self, uid: str) -> None:
        return None


class FakeCatalog(Failing):
    def __init__(self) -> None:
        super().__init__()
        self.prices = {
            "cx23": ServerTypeView(
                "cx23",
                {"fsn1": 5.49, "nbg1": 5.49, "hel1": 5.49},
                frozenset({"fsn1", "nbg1", "hel1"}),
            ),
            "cpx22": ServerTypeView(
                "cpx22", {"fsn1": 7.99, "ash": 8.99}, frozenset({"fsn1", "ash"})
            ),
            # Deprecated: still listed where its date has not passed, orderable nowhere.
            "cx22": ServerTypeView("cx22", {"fsn1": 4.59}, frozenset(), deprecated=True),
        }

    async def types(self) -> dict[str, ServerTypeView]:
        self._call("types")
        return dict(self.prices)


def fake_cloud() -> tuple[Cloud, FakeServers, FakeDns]:
    """The providers as the Domain reconciler sees them, and the two fakes behind them."""
    servers, dns = FakeServers(), FakeDns()
    cloud = Cloud(
        servers=servers,
        dns=dns,
        actions=FakeActions(),
        fleet=FakeFleet(servers),
        catalog=FakeCatalog(),
        identity=Identity(generate_ssh_key("smart-operator"), b"k" * 32, "inst-1"),
    )
    return cloud, servers, dns


class FakeEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[EventType, str, str]] = []

    def post(self, type: EventType, reason: str, message: str) -> None:
        self.posted.append((type, reason, message))

    def reasons(self, type: EventType | None = None) -> list[str]:
        return [r for t, r, _ in self.posted if type is None or t == type]


class FakeResources(Failing):
    """The Kubernetes objects the reconcilers read and the status patches they send."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[ObjectRef, dict[str, Any]] = {}
        self.patches: list[tuple[ObjectRef, dict[str, Any]]] = []
        self.applied: list[dict[str, Any]] = []
        self.namespaces: set[str] = set()
        self.namespace_labels_: dict[str, dict[str, str]] = {}
        """Labels of the namespaces in ``namespaces`` (none when absent here)."""
        self.quotas: dict[tuple[str, str], QuotaView] = {}
        self.deleted_quotas: list[tuple[str, str]] = []
        self.accounts: dict[tuple[str, str], str] = {}
        """ServiceAccounts by (namespace, name): their uids, made by ``apply``."""
        for spec in all_builtins():  # the catalogue the chart installs
            body = catalog_object(spec)
            self.put(ObjectRef("clusterexperimenttemplates", body["metadata"]["name"]), body)

    def put(self, ref: ObjectRef, body: dict[str, Any]) -> None:
        self.objects[ref] = copy.deepcopy(body)

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        self._call("get")
        found = self.objects.get(ref)
        return copy.deepcopy(found) if found is not None else None

    async def list_namespaced(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        self._call("list_namespaced")
        return [
            copy.deepcopy(body)
            for ref, body in self.objects.items()
            if ref.plural == plural and ref.namespace == namespace
        ]

    async def list_cluster(self, plural: str) -> list[dict[str, Any]]:
        self._call("list_cluster")
        return [
            copy.deepcopy(body)
            for ref, body in self.objects.items()
            if ref.plural == plural and ref.namespace is None
        ]

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> None:
        self._call("patch_status")
        self.patches.append((ref, copy.deepcopy(patch)))
        body = self.objects.get(ref)
        if body is not None:
            body["status"] = _merge(body.get("status") or {}, patch)

    async def domain_uids(self) -> set[str]:
        self._call("domain_uids")
        return {
            body["metadata"]["uid"] for ref, body in self.objects.items() if ref.plural == "domains"
        }

    async def label(self, ref: ObjectRef, labels: dict[str, str]) -> None:
        self._call("label")
        body = self.objects.get(ref)
        if body is not None:
            body.setdefault("metadata", {}).setdefault("labels", {}).update(labels)

    async def apply(self, obj: dict[str, Any]) -> None:
        self._call("apply")
        self.applied.append(copy.deepcopy(obj))
        if obj["kind"] == "Namespace":
            self.namespaces.add(obj["metadata"]["name"])
            labels = self.namespace_labels_.setdefault(obj["metadata"]["name"], {})
            labels.update(obj["metadata"].get("labels") or {})
        if obj["kind"] == "ServiceAccount":
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            self.accounts.setdefault(key, f"uid-{len(self.applied)}")

    async def read_quota(self, namespace: str, name: str) -> QuotaView | None:
        self._call("read_quota")
        return self.quotas.get((namespace, name))

    async def delete_quota(self, namespace: str, name: str) -> None:
        self._call("delete_quota")
        self.quotas.pop((namespace, name), None)
        self.deleted_quotas.append((namespace, name))

    async def account_uid(self, namespace: str, name: str) -> str | None:
        self._call("account_uid")
        return self.accounts.get((namespace, name))

    async def namespace_exists(self, name: str) -> bool:
        self._call("namespace_exists")
        return name in self.namespaces

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        self._call("namespace_labels")
        if name not in self.namespaces:
            return None
        return dict(self.namespace_labels_.get(name, {}))

    async def delete_namespace(self, name: str) -> None:
        self._call("delete_namespace")
        self.namespaces.discard(name)
        self.namespace_labels_.pop(name, None)


def _merge(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a merge patch."""
    merged = dict(old)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class FakeDeployer(Failing):
    """A server's experiments folder: what is current for each experiment."""

    def __init__(self) -> None:
        super().__init__()
        self.current: dict[tuple[str, str], str] = {}
        self.uploads = 0
        self.files: dict[str, bytes] = {}
        """The files of the last revision deployed."""

    async def deploy(
        self, target: Target, experiment: str, revision: str, files: dict[str, bytes]
    ) -> DeployResult:
        self._call("deploy")
        key = (target.address, experiment)
        uploaded = self.current.get(key) != revision
        self.uploads += int(uploaded)
        self.current[key] = revision
        self.files = dict(files)
        return DeployResult(uploaded, uploaded, revision)

    async def remove(self, target: Target, experiment: str) -> None:
        self._call("remove")
        self.current.pop((target.address, experiment), None)


def minutes_ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


class FakeInstaller(Failing):
    """Servers' agents as the installer leaves them: by address, the bundle, the
    environment and the host key."""

    bundle_sha256 = "ab" * 32

    def __init__(self, servers: FakeServers) -> None:
        super().__init__()
        self.servers = servers
        self.environments: dict[str, AgentEnvironment] = {}
        self.certificates: dict[str, IssuedCertificate] = {}
        """Delivered certificates (with their keys), by address."""
        self.host_keys: dict[str, str] = {}
        """Rotated host keys, by address; before that, the one in the user-data."""
        self.authorized: dict[str, list[str]] = {}
        """The deploy user's authorized public keys, by address; before the first look,
        the ones in the server's user-data (a user-data without users authorizes the
        key the operator offers first)."""
        self._next: dict[str, str] = {}

    def _server_at(self, address: str) -> ServerView:
        return next(s for s in self.servers.servers_by_id.values() if s.ipv4 == address)

    def _authorized(self, target: Target) -> list[str]:
        if target.address not in self.authorized:
            text = self.servers.user_data.get(self._server_at(target.address).id) or "{}"
            users = (yaml.safe_load(text) or {}).get("users") or []
            self.authorized[target.address] = (
                list(users[0].get("ssh_authorized_keys", []))
                if users
                else [public_key_of(target.client_private_key)]
            )
        return self.authorized[target.address]

    def _log_in(self, target: Target) -> str | None:
        """Which key the server accepts (as ``connect_pinned`` tries them): the current
        one, else the previous one (returned), else ``OperatorKeyRefused``."""
        keys = self._authorized(target)
        current = public_key_of(target.client_private_key)
        if any(same_key(k, current) for k in keys):
            return None
        previous = target.previous_client_private_key
        if previous is not None and any(same_key(k, public_key_of(previous)) for k in keys):
            return public_key_of(previous)
        tried = [fingerprint(current)] + (
            [fingerprint(public_key_of(previous))] if previous else []
        )
        raise OperatorKeyRefused("ssh", f"{target.address}: refused {' and '.join(tried)}", 60)

    async def ensure_operator_key(self, target: Target) -> OperatorKeyCheck:
        self._call("ensure_operator_key")
        self._check_pin(target)
        self._log_in(target)
        current = public_key_of(target.client_private_key)
        keys = self._authorized(target)
        given = target.previous_client_private_key
        previous = public_key_of(given) if given is not None else None
        if previous is None or not any(same_key(k, previous) for k in keys):
            return OperatorKeyCheck(fingerprint(current))
        kept = [k for k in keys if not same_key(k, previous) and not same_key(k, current)]
        self.authorized[target.address] = [*kept, current]
        return OperatorKeyCheck(fingerprint(current), replaced=fingerprint(previous))

    def _check_pin(self, target: Target, *also: str) -> None:
        current = self.host_keys.get(target.address)
        if current is None:
            server = next(
                s for s in self.servers.servers_by_id.values() if s.ipv4 == target.address
            )
            current = yaml.safe_load(self.servers.user_data[server.id])["ssh_keys"][
                "ed25519_public"
            ]
        if current not in (target.host_public_key, *also):
            raise HostKeyMismatch("ssh", f"{target.address}: host key not verifiable")

    async def install(self, target: Target, env: AgentEnvironment) -> InstallResult:
        self._call("install")
        self._check_pin(target)
        self._log_in(target)
        changed = self.environments.get(target.address) != env
        self.environments[target.address] = env
        return InstallResult("0.2.0", self.bundle_sha256, changed, changed)

    async def prepare_host_key_rotation(self, target: Target) -> str:
        self._call("prepare")
        self._check_pin(target)
        self._log_in(target)
        return self._next.setdefault(target.address, generate_ssh_key("root@x").public)

    async def commit_host_key_rotation(self, target: Target, next_public_key: str) -> str:
        self._call("commit")
        self._check_pin(target, next_public_key)
        self._log_in(target)
        self.host_keys[target.address] = next_public_key
        self._next.pop(target.address, None)
        return next_public_key

    async def install_certificate(self, target: Target, issued: IssuedCertificate) -> None:
        self._call("install_certificate")
        self._check_pin(target)
        self._log_in(target)
        self.certificates[target.address] = issued


class FakeAuthority(Failing):
    """An ACME CA that checks the DNS-01 records really are in the fake zone while it
    validates, and issues self-signed certificates of ``lifetime`` from ``clock``."""

    def __init__(
        self, dns: Any, clock: Callable[[], datetime], lifetime: timedelta = timedelta(days=90)
    ) -> None:
        super().__init__()
        self.dns = dns
        self.clock = clock
        self.lifetime = lifetime
        self.validated: list[str] = []

    async def issue(self, names: list[str], records: ChallengeRecords) -> IssuedCertificate:
        self._call("issue")
        wanted = [(f"_acme-challenge.{name}", f"token-{name}") for name in names]
        handle = await records.present(wanted)
        try:
            present = {
                (r.name, r.content.strip('"'))
                for zone in self.dns.zones_by_id
                for r in self.dns.all_records(zone)
                if r.type == "TXT"
            }
            missing = [w for w in wanted if w not in present]
            if missing:
                raise PermanentFailure("acme", f"unauthorized: no TXT record {missing}")
            self.validated += [name for name, _ in wanted]
        finally:
            await records.clean(handle)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        now = self.clock()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + self.lifetime)
            .sign(key, hashes.SHA256())
        )
        return IssuedCertificate(
            names=tuple(names),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            fullchain_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            not_before=now,
            not_after=now + self.lifetime,
        )
