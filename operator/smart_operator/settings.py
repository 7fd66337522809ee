"""The operator's settings, read from ``SMART_*`` environment variables (the Helm
chart sets them). Every field says what it is for."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMART_", extra="ignore")

    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig to use; unset means $KUBECONFIG or the pod's service account",
    )
    plans_file: Path | None = Field(
        default=None,
        description="YAML plan catalog ({name: {title, price_monthly, domains, experiments, "
        "stripe_price_id}}); "
        "unset means the built-in starter/pro/scale catalog",
    )
    peering_name: str = Field(
        default="smart-operator",
        description="ClusterKopfPeering object through which replicas agree that one is active",
    )
    standalone: bool = Field(
        default=False, description="Run without peering (a single replica, for development)"
    )
    priority: int = Field(
        default=0, description="Peering priority; the highest-priority replica is active"
    )
    shards: int = Field(
        default=1,
        ge=1,
        description="How many shards the Customers (and everything in their namespaces) are "
        "spread over, by a hash of the namespace's name; each shard's replicas peer through "
        "their own object (<peering name>-shard-<n>). Every replica must be given the same",
    )
    shard: int = Field(
        default=0, ge=0, description="The shard this replica handles, from 0 to SMART_SHARDS - 1"
    )
    health_host: str = Field(default="0.0.0.0", description="Address of the liveness endpoint")  # noqa: S104
    health_port: int = Field(default=8080, ge=0, le=65535, description="Port of /healthz")
    metrics_host: str = Field(default="0.0.0.0", description="Address of /metrics")  # noqa: S104
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="Port of /metrics")
    resync_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often every Customer's status (counts, readiness) is refreshed",
    )
    operator_namespace: str = Field(
        default="smartserver-system",
        description="Namespace of the operator; holds its SSH key Secret",
    )
    hetzner_token: SecretStr | None = Field(
        default=None,
        description="Hetzner Cloud API token; unset means Domains wait with a condition",
    )
    hetzner_endpoint: str = Field(
        default="https://api.hetzner.cloud/v1", description="Hetzner Cloud API base URL"
    )
    cloudflare_token: SecretStr | None = Field(
        default=None, description="Cloudflare API token with Zone and DNS edit rights"
    )
    cloudflare_endpoint: str = Field(
        default="https://api.cloudflare.com/client/v4", description="Cloudflare API base URL"
    )
    cloudflare_account_id: str = Field(
        default="", description="Cloudflare account that new zones are created in"
    )
    account_secrets: list[str] = Field(
        default_factory=list,
        description="Names of the Secrets in the operator's namespace that each hold one "
        "more provider account of the pool (a Hetzner project and a Cloudflare account; "
        'keys in docs/operations.md), as a JSON list, for example ["provider-eu-2"]. The '
        "operator may read only these (Helm: providerAccounts)",
    )
    default_account_server_quota: int = Field(
        default=100,
        ge=1,
        description="The most servers the Hetzner project of the operator's own tokens (the "
        "provider account 'default') may hold: its limit in the Hetzner Console (Limits). "
        "New Domains go to another account of the pool once it is reached",
    )
    default_account_drained: bool = Field(
        default=False,
        description="The provider account 'default' (the operator's own tokens) takes no "
        "new Domains; those on it stay. Further accounts: Secrets (docs/operations.md)",
    )
    account_refresh_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often, at most, the provider account Secrets are read again when "
        "a Domain is placed (server-quota, the drained label, a Secret made after start)",
    )
    installation_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?$",
        description="This installation's id, on the labels of every cloud object it makes "
        "and in every DNS record's comment (so at most 16 characters: Free zones allow 100 "
        "in a comment); the sweep removes only its own. Unset: a random id kept in the Secret "
        "smart-operator-keys. Set it when two installations share a provider account and "
        "you want readable labels",
    )
    ssh_sources: list[str] = Field(
        default_factory=list,
        description="Networks (CIDR) the operator connects from: the only SSH sources the "
        'servers\' firewalls allow (JSON list, for example ["203.0.113.7/32"]). Hetzner '
        "accepts only CIDR blocks without host bits, at most 100 in a rule",
        max_length=100,
    )

    @model_validator(mode="after")
    def _shard_in_range(self) -> OperatorSettings:
        if self.shard >= self.shards:
            raise ValueError(
                f"SMART_SHARD is {self.shard}, but the shards are numbered 0 to "
                f"{self.shards - 1} (SMART_SHARDS={self.shards}): set SMART_SHARD below "
                "SMART_SHARDS"
            )
        return self

    @field_validator("ssh_sources")
    @classmethod
    def _cidr_networks(cls, sources: list[str]) -> list[str]:
        """Refused here, at start-up, with the fix named: Hetzner would refuse each
        firewall made with them (``invalid_input``), one Domain at a time."""
        for source in sources:
            if "/" not in source:
                width = 128 if ":" in source else 32
                raise ValueError(f"{source!r} is an address, not a network: write {source}/{width}")
            try:
                ipaddress.ip_network(source, strict=True)
            except ValueError as error:
                raise ValueError(f"{source!r} is not a CIDR network: {error}") from None
        return sources

    agent_bundle: Path | None = Field(
        default=None,
        description="The agent bundle (smart-agent-<version>.tar.gz, with its .sha256 beside "
        "it) the operator delivers to every server over SSH; the platform's image carries "
        "one. Unset: servers get no agent (AgentInstalled=False says so)",
    )
    agent_settings: dict[str, str] = Field(
        default_factory=dict,
        description="More settings for every server's agent, without the SMART_AGENT_ "
        'prefix (JSON, for example {"REPORT_SECONDS": "60"})',
    )
    intake_url: str = Field(
        default="http://127.0.0.1:8088",
        description="Where servers' agents report results and heartbeats",
    )
    drift_seconds: float = Field(
        default=60.0, gt=0, description="How often a Ready Domain's server is checked for drift"
    )
    dns_drift_seconds: float = Field(
        default=900.0,
        gt=0,
        description="How often a Ready Domain's DNS records are checked (one Cloudflare call "
        "per Domain each time: keep it within the account's 1200 requests per 5 minutes)",
    )
    dns_checks_per_hour: float = Field(
        default=3600.0,
        gt=0,
        description="Most steady-state DNS drift checks per hour across all Domains: with "
        "many Domains each is checked less often, so Cloudflare calls stay flat",
    )
    verify_seconds: float = Field(
        default=60.0, gt=0, description="How often a pending ownership check is repeated"
    )
    agent_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A Domain's agent counts as connected this long after its last heartbeat",
    )
    ssh_port: int = Field(default=22, ge=1, le=65535, description="SSH port of the servers")
    deploy_check_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often a deployed Experiment is checked against its Domain and Customer",
    )
    eur_to_usd: float = Field(
        default=1.08,
        gt=0,
        description="Exchange rate for Hetzner's EUR prices in the customers' cost (US dollars)",
    )
    sweep_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How often labelled cloud objects that no Domain owns are removed",
    )
    dns_sweep_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often the sweep also scans every zone for records no Domain owns "
        "(one Cloudflare call per zone)",
    )
    sweep_grace_seconds: float = Field(
        default=600.0,
        ge=0,
        description="Cloud objects younger than this are never swept (a Domain may be "
        "creating them right now)",
    )
    stripe_api_key: SecretStr | None = Field(
        default=None,
        description="Stripe secret key (sk_live_... or a restricted rk_... with write access "
        "to Customers and Subscriptions); unset turns billing off: nobody is charged and "
        "each Customer says so in its Billing condition",
    )
    stripe_endpoint: str = Field(
        default="https://api.stripe.com",
        description="Stripe API base URL (stripe-mock's address in tests)",
    )
    billing_grace_seconds: float = Field(
        default=3 * 24 * 3600.0,
        ge=0,
        description="How long after a failed payment (Stripe's invoice.payment_failed) a "
        "Customer keeps serving its experiments before billing suspends it",
    )
    billing_sync_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="How often a Customer's subscription is read from Stripe when nothing "
        "else calls for it (a spec change, a webhook, the end of a billing period do)",
    )
    acme_directory_url: str | None = Field(
        default=None,
        description="ACME directory of the CA that issues the sites' certificates (RFC "
        "8555). Unset means Let's Encrypt: its staging directory when acme_staging is "
        "true, else production",
    )
    acme_staging: bool = Field(
        default=False,
        description="Use Let's Encrypt's staging CA (untrusted certificates, generous rate "
        "limits) when acme_directory_url is unset",
    )
    acme_email: str | None = Field(
        default=None,
        description="Contact address of the ACME account (expiry notices); optional",
    )
    acme_ca_bundle: Path | None = Field(
        default=None,
        description="A CA file that trusts the ACME server's own HTTPS (a private CA such "
        "as Pebble); unset means the system's trust store",
    )
    acme_propagation_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Wait after writing the DNS-01 records before the CA validates them "
        "(Cloudflare's nameservers serve a new record within seconds)",
    )
    tls: bool = Field(
        default=True,
        description="Serve every site over HTTPS with a certificate from ACME; false leaves "
        "the sites on plain HTTP (CertificateReady is then not reported)",
    )
    hsts_max_age: int = Field(
        default=31536000,
        ge=0,
        description="Strict-Transport-Security max-age the sites send over HTTPS (seconds; "
        "0 sends no header). No includeSubDomains or preload: those bind names the "
        "customer may use elsewhere",
    )

    uptime_checks: bool = Field(
        default=True,
        description="Check every set-up Domain's site from outside, as a visitor reaches it "
        "(DNS, TCP, TLS once it has a certificate, HTTP); false turns the checks off (no "
        "availability on the status, no Available condition)",
    )
    uptime_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often each Domain's site is checked; every Domain has its own "
        "offset inside the interval, so the checks are spread over time",
    )
    uptime_failures: int = Field(
        default=3,
        ge=1,
        description="Failed checks in a row after which a site counts as down (Available "
        "False, a Warning Event, smartserver_site_up 0)",
    )
    uptime_timeout_seconds: float = Field(
        default=10.0, gt=0, description="The longest one check may take, DNS to last byte"
    )
    uptime_concurrency: int = Field(
        default=100,
        ge=1,
        description="Most checks in flight at once: with every site timing out, the checker "
        "keeps up with concurrency / timeout checks a second (10 a second by default)",
    )
    uptime_write_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often a Domain's availability figures are written to its status "
        "while nothing changes; a site going down or coming back is written at once",
    )
    uptime_resolver: str = Field(
        default="",
        pattern=r"^(|status|[0-9a-fA-F.:\[\]]+:[0-9]{1,5})$",
        description="How the checks resolve a Domain's name: empty means the system "
        "resolver, as visitors do; host:port asks that DNS server directly (for example a "
        "test world's nameserver); 'status' skips DNS and connects to the server address "
        "on the status (said so in the condition)",
    )
    uptime_ca_bundle: Path | None = Field(
        default=None,
        description="Extra CA certificates the checks trust for the sites' HTTPS (a test "
        "CA such as Pebble's root); the system's trust store is always used too",
    )

    @property
    def acme_directory(self) -> str:
        """The ACME directory in use."""
        if self.acme_directory_url:
            return self.acme_directory_url
        if self.acme_staging:
            return "https://acme-staging-v02.api.letsencrypt.org/directory"
        return "https://acme-v02.api.letsencrypt.org/directory"

    log_format: Literal["plain", "full", "json"] = Field(
        default="plain", description="Log line format; json suits log collectors"
    )
    debug: bool = Field(default=False, description="Log kopf's internals too")
