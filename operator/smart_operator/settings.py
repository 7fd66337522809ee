"""The operator's settings, read from ``SMART_*`` environment variables (the Helm
chart sets them). Every field says what it is for."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMART_", extra="ignore")

    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig to use; unset means $KUBECONFIG or the pod's service account",
    )
    plans_file: Path | None = Field(
        default=None,
        description="YAML plan catalog ({name: {title, price_monthly, domains, experiments}}); "
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
    health_host: str = Field(default="0.0.0.0", description="Address of the liveness endpoint")  # noqa: S104
    health_port: int = Field(default=8080, ge=0, le=65535, description="Port of /healthz")
    metrics_host: str = Field(default="0.0.0.0", description="Address of /metrics")  # noqa: S104
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="Port of /metrics")
    resync_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often every Customer's status (counts, readiness) is refreshed",
    )
    log_format: Literal["plain", "full", "json"] = Field(
        default="plain", description="Log line format; json suits log collectors"
    )
    debug: bool = Field(default=False, description="Log kopf's internals too")
