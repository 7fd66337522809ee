"""Settings of the intake process, read from ``SMART_INTAKE_*`` environment variables
(the Helm chart sets them). Every field says what it is for."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from smart_operator.intake.misses import MissLimits
from smart_operator.intake.status import HISTORY_POINTS, HISTORY_SECONDS, MIN_HISTORY_POINTS
from smart_operator.models.experiment import HISTORY_MAX_POINTS


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMART_INTAKE_", extra="ignore")

    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig to use; unset means $KUBECONFIG or the pod's service account",
    )
    host: str = Field(default="0.0.0.0", description="Address the agents' API listens on")  # noqa: S104
    port: int = Field(
        default=8088,
        ge=0,
        le=65535,
        description="Port of /v1/* and /healthz (the operator's SMART_INTAKE_URL points here)",
    )
    metrics_host: str = Field(default="0.0.0.0", description="Address of /metrics")  # noqa: S104
    metrics_port: int | None = Field(
        default=9090,
        ge=0,
        le=65535,
        description="Port of Prometheus /metrics, kept off the agents' port; unset serves "
        "/metrics on the agents' port instead",
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request body accepted; larger ones are answered 413",
    )
    flush_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        le=300,
        description="One Experiment's status is written at most this often: the first report "
        "after a quiet spell is written at once, the newest of the reports that arrive "
        "within this interval after a write is written when it ends",
    )
    idle_write_seconds: float = Field(
        default=1800.0,
        ge=0,
        description="A report that changes no count, statistic or decision is not written, "
        "except to refresh status.lastReportAt once it is this old",
    )
    heartbeat_write_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="While an agent keeps sending heartbeats, its Domain's "
        "status.agent.lastSeen is rewritten this often (status.agent.renewSeconds says so): "
        "the intake holds liveness in memory and marks a silent agent itself "
        "(silent_seconds). A new agent version, start time or served revision is written "
        "at once. It is also how long the operator takes to count agents silent when no "
        "intake process runs at all",
    )
    silent_seconds: float = Field(
        default=180.0,
        gt=0,
        le=240,
        description="An agent from which no heartbeat (sent every 30 s) reached this process "
        "for this long is marked silent (status.agent.silentSince), which the operator's "
        "AgentConnected and the dashboard show 30 s later; with the sweep every 10 s, "
        "within 220 s of its last heartbeat",
    )
    peers: str | None = Field(
        default=None,
        description="DNS name resolving to every replica's address (the chart's headless "
        "Service), or several, comma-separated: before marking agents silent, a replica "
        "asks the others on their metrics port which of them they heard from "
        "(docs/intake-api.md, Liveness). Unset: the replica asks nobody, and a wrong "
        "mark is cleared by the replica that heard the agent, at the price of two writes",
    )
    history_seconds: float = Field(
        default=HISTORY_SECONDS,
        ge=0,
        description="An Experiment's status.history (the dashboard's chart) gets a point with "
        "the current counts when they changed and its newest point is this old; the first "
        "report always adds one. Points ride along with result writes and never cause one",
    )
    history_points: int = Field(
        default=HISTORY_POINTS,
        ge=MIN_HISTORY_POINTS,
        le=HISTORY_MAX_POINTS,
        description="Most points of status.history; beyond it every other point of the older "
        "half is dropped, so the history spans the whole experiment at a coarser grain",
    )
    max_visitors_per_second: float = Field(
        default=10_000.0,
        gt=0,
        description="Plausibility limit: the most visitors (and conversions) one Experiment's "
        "counts may gain per second between two reports of an agent; a report claiming more "
        "is refused (422 implausible_growth) and nothing of it is written. A small server "
        "serves far fewer distinct visitors than this",
    )
    growth_slack_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Added to the time between two reports when applying "
        "max_visitors_per_second, for clocks of replicas and the age of the counts a report "
        "carries",
    )
    missing_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="A report for an Experiment the watch-fed cache does not hold is looked "
        "up with one GET; a name found missing is remembered this long and answered 403 "
        "without another (an Experiment the watch brings meanwhile is found at once)",
    )
    miss_lookups_per_domain_burst: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="GETs for Experiments the cache does not hold that one Domain's key may "
        "cause at once; beyond them (and the refill below) such reports are answered 429 "
        "with Retry-After, which agents retry, and cost no call",
    )
    miss_lookups_per_domain_per_second: float = Field(
        default=0.5,
        gt=0,
        le=1000,
        description="How fast one Domain's budget of such GETs refills",
    )
    miss_lookups_overall_burst: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="GETs for Experiments the cache does not hold that all keys together "
        "may cause at once",
    )
    miss_lookups_overall_per_second: float = Field(
        default=10.0,
        gt=0,
        le=10_000,
        description="How fast the overall budget of such GETs refills",
    )
    analysis_threads: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Threads that compute the statistics of reports before they are written, "
        "so the event loop keeps answering agents meanwhile",
    )
    max_concurrent_writes: int = Field(
        default=16, ge=1, le=256, description="Status writes in flight at once, across objects"
    )
    drain_seconds: float = Field(
        default=10.0,
        ge=0,
        description="On shutdown, how long pending writes may take before the process exits "
        "(anything left is resent by the agents, whose counts are cumulative)",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of platform staff for GET /v1/admin/platform; unset "
        "turns the platform view off",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret of the Stripe webhook endpoint that points at "
        "POST /v1/stripe/webhook (whsec_...); unset answers that route 404",
    )
    stripe_tolerance_seconds: int = Field(
        default=300,
        ge=1,
        description="A webhook whose signed timestamp is older than this is refused as a "
        "replay (Stripe's SDK default)",
    )
    stripe_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest Stripe webhook body accepted (an invoice event carries its "
        "lines, so more than an agent's report)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level; request bodies and keys are never logged"
    )

    @property
    def miss_limits(self) -> MissLimits:
        """The bounds on lookups of Experiments the cache does not hold."""
        return MissLimits(
            missing_seconds=self.missing_seconds,
            per_domain_burst=self.miss_lookups_per_domain_burst,
            per_domain_per_second=self.miss_lookups_per_domain_per_second,
            overall_burst=self.miss_lookups_overall_burst,
            overall_per_second=self.miss_lookups_overall_per_second,
        )
