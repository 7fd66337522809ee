"""Settings of the dashboard process, read from ``SMART_DASHBOARD_*`` environment
variables (the Helm chart and the tests set them). Every field says what it is for."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN = 32  # characters: a guess at a random 32-character token is hopeless


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMART_DASHBOARD_", extra="ignore")

    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig of the dashboard's own account (smart-dashboard); unset means "
        "$KUBECONFIG or the pod's service account",
    )
    host: str = Field(default="0.0.0.0", description="Address the web server listens on")  # noqa: S104
    port: int = Field(default=8000, ge=0, le=65535, description="Port of the pages and /healthz")
    session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs session cookies (HMAC-SHA256), at least 32 characters. "
        "Unset means a random key per process: sessions end when it restarts, and replicas "
        "do not share them",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description=f"Token that platform staff sign in with, at least {MIN_ADMIN_TOKEN} "
        "characters (for example `openssl rand -base64 32`); unset means no staff sign-in",
    )
    token_audience: str = Field(
        default="smartserver-dashboard",
        min_length=1,
        description="Audience of the customers' dashboard tokens (`kubectl create token "
        "dashboard-viewer --audience <this>`); the API server refuses such tokens, and "
        "sign-in refuses tokens for any other audience, the API server's included",
    )
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="How long a session lasts after sign-in"
    )
    secure_cookies: bool = Field(
        default=True,
        description="Mark the session cookie Secure (sent over HTTPS only); switch off only "
        "for plain-HTTP development on loopback",
    )
    heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="A live-update stream sends a keep-alive comment this often when idle, "
        "and checks then that its session is still valid",
    )
    client_queue: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Changes buffered per browser; a browser that falls this far behind is "
        "disconnected (its EventSource reconnects and reloads)",
    )
    signin_attempts_per_client: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Sign-in attempts one client address may make in a burst; one more "
        "becomes available every signin_window_minutes / this",
    )
    signin_window_minutes: float = Field(
        default=10.0, gt=0, le=24 * 60, description="See signin_attempts_per_client"
    )
    signin_attempts_per_minute: int = Field(
        default=120,
        ge=1,
        le=100_000,
        description="Sign-in attempts from all clients together per minute (each is a "
        "TokenReview on the API server); past it every client waits",
    )
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(
        default_factory=list,
        description="Reverse proxies (CIDRs, JSON list) whose X-Forwarded-For names the "
        "client: sign-in attempts are limited per client address, so behind an ingress list "
        "its addresses here, or every visitor shares the ingress's limit",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of the process"
    )

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_ADMIN_TOKEN:
            raise ValueError(
                f"the staff token must be at least {MIN_ADMIN_TOKEN} characters (it is "
                f"{len(token.get_secret_value())}); make one with `openssl rand -base64 32`"
            )
        return token
