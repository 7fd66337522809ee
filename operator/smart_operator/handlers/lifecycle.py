"""Operator start-up and shutdown: kopf settings, log-in, the shared context."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from smart_operator import shards
from smart_operator.agentbundle import AgentBundle
from smart_operator.clients.accounts import connect_pool
from smart_operator.clients.acme import AcmeIssuer
from smart_operator.clients.agent_install import BundleInstaller
from smart_operator.clients.budget import RequestBudget
from smart_operator.clients.kube import Kube
from smart_operator.clients.kubeapi import connect
from smart_operator.clients.probe import HttpSiteProbe
from smart_operator.clients.ssh import SSHDeployer
from smart_operator.clients.stripe import StripeBilling
from smart_operator.handlers.context import Context, wake
from smart_operator.keys import SSHKeyPair, generate_ssh_key, same_key, stored_key_pair
from smart_operator.models.common import GROUP
from smart_operator.plans import load_catalog
from smart_operator.ports import Cloud, Identity
from smart_operator.reconcile.domain import DnsCheckSchedule
from smart_operator.reconcile.uptime import UptimeChecker
from smart_operator.settings import OperatorSettings

SSH_SECRET = "smart-operator-ssh"  # noqa: S105 (a Secret's name)
KEYS_SECRET = "smart-operator-keys"  # noqa: S105 (a Secret's name)
CURRENT_KEY = "id_ed25519"
PREVIOUS_KEY = "id_ed25519.previous"
"""The key a rotation replaced (docs/operations.md): tried when a server refuses the
current one, and replaced by it on that server."""


async def stored_secret(
    kube: Kube, namespace: str, name: str, make: Callable[[], dict[str, str]]
) -> dict[str, str]:
    """A Secret of the operator's, made on first start; when replicas race, whatever
    the Secret holds wins."""
    stored = await kube.read_secret(namespace, name)
    if stored is None:
        await kube.create_secret(namespace, name, make())
        stored = await kube.read_secret(namespace, name)
    if stored is None:
        raise kopf.TemporaryError(f"Secret {namespace}/{name} cannot be read back", delay=5)
    return stored


async def operator_identity(kube: Kube, settings: OperatorSettings) -> Identity:
    """The operator's SSH key, the secret its servers' keys derive from, and its
    installation id: kept in two Secrets of its namespace."""
    namespace = settings.operator_namespace

    def new_ssh_key() -> dict[str, str]:
        made = generate_ssh_key("smart-operator")
        return {CURRENT_KEY: made.private, f"{CURRENT_KEY}.pub": made.public}

    def new_keys() -> dict[str, str]:
        return {
            "server-key-secret": secrets.token_hex(32),
            "installation": secrets.token_hex(4),
        }

    ssh = await stored_secret(kube, namespace, SSH_SECRET, new_ssh_key)
    keys = await stored_secret(kube, namespace, KEYS_SECRET, new_keys)
    current, previous = ssh_keys(ssh, f"{namespace}/{SSH_SECRET}")
    return Identity(
        ssh_key=current,
        key_secret=bytes.fromhex(keys["server-key-secret"]),
        installation=settings.installation_id or keys["installation"],
        previous_ssh_key=previous,
    )


def ssh_keys(data: dict[str, str], where: str) -> tuple[SSHKeyPair, SSHKeyPair | None]:
    """The operator's SSH key and, during a rotation, the key it replaced, from the
    Secret's data: ``id_ed25519`` (with ``id_ed25519.pub``) and, optionally,
    ``id_ed25519.previous`` (with ``id_ed25519.previous.pub``). A public line may be
    left out; one that does not match its private key stops the start-up."""

    def pair(name: str) -> SSHKeyPair:
        try:
            return stored_key_pair(data[name], data.get(f"{name}.pub"))
        except (ValueError, TypeError) as error:
            raise kopf.PermanentError(f"Secret {where}: {name}: {error}") from error

    if not data.get(CURRENT_KEY):
        raise kopf.PermanentError(f"Secret {where} has no {CURRENT_KEY}")
    current = pair(CURRENT_KEY)
    previous = pair(PREVIOUS_KEY) if data.get(PREVIOUS_KEY) else None
    if previous is not None and same_key(previous.public, current.public):
        previous = None
    return current, previous


Closer = Callable[[], Awaitable[None]]


def uptime_checker(ctx: Context) -> UptimeChecker:
    """The outside checks of the sites, from this process; a site going down or coming
    back wakes its Domain's next pass, which turns it into the Available condition."""
    settings = ctx.settings
    probe = HttpSiteProbe(
        settings.uptime_timeout_seconds, settings.uptime_resolver, settings.uptime_ca_bundle
    )
    return UptimeChecker(
        probe,
        ctx.kube,
        interval=settings.uptime_seconds,
        failures=settings.uptime_failures,
        concurrency=settings.uptime_concurrency,
        write_seconds=settings.uptime_write_seconds,
        on_change=lambda uid: wake(ctx, uid),
    )


async def connect_cloud(kube: Kube, settings: OperatorSettings) -> tuple[Cloud, Closer] | None:
    """The providers' clients and shared views of every provider account (the pool:
    ``clients.accounts``), and how to close them; None without any account. The
    returned Cloud is the default account's, with the pool on it."""
    pool = await connect_pool(kube, settings, lambda: operator_identity(kube, settings))
    if pool is None:
        return None
    cloud = pool.cloud(pool.default)
    assert cloud is not None
    return cloud, pool.close


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    @kopf.on.startup(registry=registry)
    async def configure(
        settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        # Progress and the last-handled spec live in annotations under our own group,
        # so the structural status schema stays exactly what the CRD declares.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        # One finalizer per shard (``shards.finalizer``): kopf removes its own from
        # every object its filters leave out, so shards must not share one.
        settings.persistence.finalizer = shards.finalizer(
            operator_settings.shard, operator_settings.shards
        )
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 270
        # A steady Domain's DNS check also needs the platform-wide allowance, so the
        # Cloudflare calls per hour stay flat however many Domains there are; each
        # shard's active replica takes its share.
        per_second = operator_settings.dns_checks_per_hour / 3600 / operator_settings.shards
        allowance = RequestBudget("dns-drift-checks", limit=60, per_second=per_second)
        memo.context = Context(
            settings=operator_settings,
            plans=load_catalog(operator_settings.plans_file),
            kube=Kube(await connect(operator_settings.kubeconfig)),
            deployer=SSHDeployer(),
            dns_schedule=DnsCheckSchedule(operator_settings.dns_drift_seconds, allowance.try_take),
        )
        if operator_settings.uptime_checks:
            memo.context.uptime = uptime_checker(memo.context)
            memo.uptime_task = asyncio.create_task(memo.context.uptime.run(), name="uptime")
        if operator_settings.agent_bundle is not None:
            bundle = AgentBundle.load(operator_settings.agent_bundle)
            memo.context.installer = BundleInstaller(bundle)
            logger.info("agent bundle %s (%s)", bundle.version, bundle.sha256[:12])
        if not operator_settings.standalone:
            await memo.context.kube.ensure_peering(
                shards.peering_name(
                    operator_settings.peering_name,
                    operator_settings.shard,
                    operator_settings.shards,
                )
            )
        connected = await connect_cloud(memo.context.kube, operator_settings)
        if connected is not None:
            memo.context.cloud, memo.close_cloud = connected
            if operator_settings.tls:
                memo.context.authority = AcmeIssuer(
                    operator_settings.acme_directory,
                    memo.context.cloud.identity.key_secret,
                    email=operator_settings.acme_email,
                    ca_bundle=operator_settings.acme_ca_bundle,
                    propagation_seconds=operator_settings.acme_propagation_seconds,
                )
                logger.info("certificates from %s", operator_settings.acme_directory)
        else:
            logger.warning(
                "SMART_HETZNER_TOKEN or SMART_CLOUDFLARE_TOKEN is not set and no provider "
                "account Secret is there: Domains will wait with an OperatorNotConfigured "
                "condition"
            )
        if operator_settings.stripe_api_key is not None:
            memo.stripe = StripeBilling(
                operator_settings.stripe_api_key.get_secret_value(),
                operator_settings.stripe_endpoint,
            )
            memo.context.billing = memo.stripe
            unpriced = [
                name for name, plan in memo.context.plans.root.items() if not plan.stripe_price_id
            ]
            if unpriced:
                logger.warning(
                    "plans without a stripe_price_id (their Customers cannot be subscribed): %s",
                    ", ".join(unpriced),
                )
        else:
            logger.warning(
                "SMART_STRIPE_API_KEY is not set: billing is off (Customers say so in their "
                "Billing condition)"
            )
        logger.info("plan catalog: %s", ", ".join(memo.context.plans.names))

    operator_settings = settings

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        task = getattr(memo, "uptime_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if getattr(memo, "context", None) is not None:
            await memo.context.customer_refreshes.drain(within=5)
            if getattr(memo, "close_cloud", None) is not None:
                await memo.close_cloud()
            if getattr(memo, "stripe", None) is not None:
                await memo.stripe.close()
            await memo.context.kube.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.probe(registry=registry, id="catalog")
    def catalog_probe(memo: kopf.Memo, **_: Any) -> list[str]:
        return list(memo.context.plans.names) if getattr(memo, "context", None) else []
