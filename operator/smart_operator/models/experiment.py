"""The ``Experiment`` resource: variants of a template served on a Domain's server."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from smart_operator.models.common import (
    AGE_COLUMN,
    NAME_PATTERN,
    READY_COLUMN,
    CamelModel,
    Condition,
    KindInfo,
    PrinterColumn,
    Resource,
    StatusModel,
    Writer,
    conditions_field,
    list_map,
)


class ExperimentType(StrEnum):
    LANDING_PAGE = "landing_page"
    PERFORMANCE = "performance"
    CONVERSION = "conversion"


Component = Literal["hero", "problem", "solution", "proof", "features", "pricing", "faq", "cta"]


class ExperimentPhase(StrEnum):
    PENDING = "Pending"
    DEPLOYING = "Deploying"
    RUNNING = "Running"
    CONCLUDED = "Concluded"
    FAILED = "Failed"


class TemplateConfig(CamelModel):
    """Settings shared by every variant of the template."""

    fathom_site_id: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{8}$",
        description="Fathom Analytics site id: eight capital letters (for example UQBOCDXH)",
    )
    stripe_link: str | None = Field(
        default=None,
        pattern=r"^https://[^\s/]+\.[^\s/]+(/\S*)?$",
        max_length=2048,
        description="The call to action's target: an https Stripe payment link",
    )
    components: list[Component] = Field(
        default=["hero", "problem", "solution", "proof", "cta"],
        max_length=8,
        description="Page sections, in order",
    )
    brand: str | None = Field(default=None, max_length=80, description="Product or company name")


class Variant(CamelModel):
    """One arm of the experiment; the first variant is the control."""

    name: str = Field(pattern=NAME_PATTERN, max_length=40)
    weight: int = Field(default=50, ge=0, le=1000, description="Relative share of visitors")
    values: dict[str, str] = Field(
        default_factory=dict,
        description="Template values this variant overrides (for example headline, gzip)",
    )


class Goal(CamelModel):
    metric: Literal["conversion_rate", "p50_latency", "p95_latency"] = Field(
        default="conversion_rate",
        description="What decides the experiment; performance experiments use latency",
    )


class StoppingRules(CamelModel):
    min_visitors_per_variant: int = Field(
        default=200, ge=10, le=10_000_000, description="No decision before this many visitors"
    )
    max_duration_days: int = Field(
        default=28, ge=1, le=365, description="Conclude after this many days regardless"
    )
    alpha: float = Field(
        default=0.05,
        ge=0.0001,
        le=0.2,
        description="Always-valid false-positive bound, 0.0001 to 0.2; the uplift intervals "
        "are at 1 - alpha, corrected for the number of variants",
    )


class ExperimentSpec(CamelModel):
    """What platform staff declare about an experiment."""

    domain_ref: str = Field(
        pattern=NAME_PATTERN, max_length=253, description="Name of a Domain in this namespace"
    )
    type: ExperimentType
    template: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,62}$",
        max_length=63,
        description="The template's spec.name: an ExperimentTemplate of this namespace "
        "(a private template) or else a ClusterExperimentTemplate (the platform's catalogue)",
    )
    template_version: int | None = Field(
        default=None,
        ge=1,
        description="The template version to render; without it, the version in "
        "status.template once deployed, else the latest",
    )
    template_config: TemplateConfig = TemplateConfig()
    variants: list[Variant] = Field(
        min_length=2,
        max_length=10,
        description="The arms, control first; names are unique",
        json_schema_extra=list_map("name"),
    )
    goal: Goal = Goal()
    stopping: StoppingRules = StoppingRules()
    auto_promote: bool = Field(
        default=False, description="Serve only the winner once the experiment concludes"
    )


class Percentiles(CamelModel):
    """p50, p75 and p95 of a sample, each with its look-once bootstrap interval."""

    p50: float | None = None
    p50_low: float | None = None
    p50_high: float | None = None
    p75: float | None = None
    p75_low: float | None = None
    p75_high: float | None = None
    p95: float | None = None
    p95_low: float | None = None
    p95_high: float | None = None
    confidence: float | None = Field(
        default=None, gt=0, lt=1, description="Confidence level of the intervals"
    )


class RealUserTimings(CamelModel):
    """What visitors' browsers measured on this variant's page views (W3C Navigation
    Timing and Largest Contentful Paint, sent by the page's own script)."""

    views: int = Field(default=0, ge=0, description="Page views timed in all")
    lcp_ms: Percentiles | None = Field(
        default=None, description="Largest contentful paint (where the browser reports it)"
    )
    ttfb_ms: Percentiles | None = Field(
        default=None, description="Time to first byte, from the start of the navigation"
    )
    transfer_bytes: Percentiles | None = Field(
        default=None, description="Bytes transferred per page view: the page and its resources"
    )


class SyntheticLatency(CamelModel):
    """The agent's own probe of its server over loopback: no network lies between them
    (no round trips, bandwidth or TLS cost), so it never decides the experiment."""

    requests: int = Field(default=0, ge=0)
    p50_ms: float | None = None
    p95_ms: float | None = None


class VariantResult(CamelModel):
    name: str
    visitors: int = Field(default=0, ge=0)
    conversions: int = Field(default=0, ge=0)
    rate: float | None = None
    rate_low: float | None = None
    rate_high: float | None = None
    rate_confidence: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Confidence level of rateLow/rateHigh (a look-once Wilson interval)",
    )
    uplift: float | None = None
    uplift_low: float | None = None
    uplift_high: float | None = Field(
        default=None,
        description="Upper bound of the always-valid uplift interval; absent while the data "
        "cannot bound it yet (upliftLow present) or before there is an estimate",
    )
    uplift_confidence: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Confidence level of upliftLow/upliftHigh: 1 - alpha, corrected for the "
        "number of variants (Holm: 1 - alpha/m at the first of m comparisons)",
    )
    chance_to_beat_control: float | None = None
    always_valid_p_value: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Always-valid p-value against the control before the correction for "
        "several variants: the running minimum over every report, kept here so that a "
        "decision, once reached, stays reached",
    )
    p50_ms: float | None = Field(
        default=None,
        description="Real-user page load (largest contentful paint), p50, in ms: what a "
        "latency goal decides on",
    )
    p75_ms: float | None = Field(default=None, description="Real-user page load, p75, in ms")
    p95_ms: float | None = Field(default=None, description="Real-user page load, p95, in ms")
    real_user: RealUserTimings | None = None
    synthetic: SyntheticLatency | None = None


class Statistics(CamelModel):
    always_valid_p_value: float | None = None
    sample_ratio_p_value: float | None = None
    sample_ratio_mismatch: bool | None = None
    visitors_needed: int | None = Field(
        default=None, ge=0, description="About how many more visitors a decision needs"
    )


class Decision(CamelModel):
    outcome: Literal["pending", "winner", "no_difference"] = "pending"
    winner: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None


HISTORY_MAX_POINTS = 500
"""The most points ``status.history`` may hold (the CRD's ``maxItems``); the intake keeps
fewer (``SMART_INTAKE_HISTORY_POINTS``)."""


class HistoryCounts(CamelModel):
    """One variant's cumulative counts at one point of the history."""

    variant: str = Field(pattern=NAME_PATTERN, max_length=40)
    visitors: int = Field(default=0, ge=0)
    conversions: int = Field(default=0, ge=0)


class HistoryPoint(CamelModel):
    """The cumulative counts of every variant at one moment."""

    at: datetime = Field(description="When the intake received the report with these counts")
    counts: list[HistoryCounts] = Field(
        default_factory=list,
        max_length=10,
        description="Cumulative visitors and conversions of each variant, control first",
        json_schema_extra=list_map("variant"),
    )


LEGACY_INCARNATION = "-"
"""The incarnation of agents that name none (before the field existed), and of the counts
an Experiment recorded before incarnations were kept."""
INCARNATION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,63}$"
"""An agent's incarnation id: 8 to 64 characters (a random UUID or 128-bit hex)."""
INCARNATIONS_MAX_ITEMS = 16
"""The most incarnations ``status.incarnations`` may hold (the CRD's ``maxItems``); the
intake keeps fewer."""


class IncarnationCounts(CamelModel):
    """What one agent incarnation (one counts database on one server) has reported."""

    id: str = Field(
        max_length=64,
        description="The agent's incarnation id, or '-' for agents that send none",
    )
    last_sequence: int = Field(default=0, ge=0, description="Its last sequence recorded")
    first_report_at: datetime | None = None
    last_report_at: datetime | None = None
    counts: list[HistoryCounts] = Field(
        default_factory=list,
        max_length=10,
        description="The cumulative counts it last reported, per variant",
        json_schema_extra=list_map("variant"),
    )


class TemplatePin(CamelModel):
    """The template version an Experiment renders from, recorded when first rendered:
    a newer version does not change what it serves until spec.templateVersion asks."""

    kind: Literal["ClusterExperimentTemplate", "ExperimentTemplate"]
    object: str = Field(max_length=253, description="The template object's metadata.name")
    name: str = Field(max_length=63)
    version: int = Field(ge=1)
    digest: str = Field(
        max_length=80, description="sha256 of the template's spec: an edit in place is noticed"
    )


class ExperimentStatus(StatusModel):
    """The operator writes the deployment (``phase``, ``deployedRevision``,
    ``serving``, conditions); the intake writes the results from the agent's reports,
    all in one patch so counts and the statistics from them never disagree."""

    WRITERS: ClassVar[Mapping[str, Writer]] = {
        "last_sequence": Writer.INTAKE,
        "last_report_at": Writer.INTAKE,
        "variants": Writer.INTAKE,
        "statistics": Writer.INTAKE,
        "decision": Writer.INTAKE,
        "history": Writer.INTAKE,
        "incarnations": Writer.INTAKE,
        "retired_incarnations": Writer.INTAKE,
        "counts_restarted_at": Writer.INTAKE,
    }

    observed_generation: int | None = None
    phase: ExperimentPhase | None = None
    deployed_revision: str | None = Field(
        default=None, description="The revision the server's agent confirmed it serves"
    )
    deployed_server: int | None = Field(
        default=None,
        description="The server (provider id) it was deployed to: a new server of the Domain "
        "gets it again",
    )
    deployed_at: datetime | None = Field(
        default=None,
        description="When the deployed revision was confirmed: heartbeats received well "
        "after it must name it, or it is deployed again",
    )
    serving: list[str] = Field(default_factory=list, description="Variants being served")
    template: TemplatePin | None = None
    last_sequence: int | None = Field(default=None, ge=0)
    last_report_at: datetime | None = None
    variants: list[VariantResult] = Field(default_factory=list)
    statistics: Statistics | None = None
    decision: Decision | None = None
    history: list[HistoryPoint] = Field(
        default_factory=list,
        max_length=HISTORY_MAX_POINTS,
        description="The counts over time, oldest first, for the dashboard's chart: the "
        "intake adds a point when the counts changed and the newest point is "
        "SMART_INTAKE_HISTORY_SECONDS old (the first report always adds one), and when "
        "there are more than SMART_INTAKE_HISTORY_POINTS drops every other point of the "
        "older half, so the points span the whole experiment",
    )
    incarnations: list[IncarnationCounts] = Field(
        default_factory=list,
        max_length=INCARNATIONS_MAX_ITEMS,
        description="Per agent incarnation (a counts database on a server: a replaced "
        "server's agent is a new one), its last sequence and counts; the totals in "
        "variants add up what each contributed",
        json_schema_extra=list_map("id"),
    )
    retired_incarnations: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Incarnations no longer tracked one by one: their counts stay in the "
        "totals, and a late report from one of them is refused",
    )
    counts_restarted_at: datetime | None = Field(
        default=None,
        description="When counts last started again from zero on a new agent incarnation "
        "(a replaced server, or a lost counts database) while earlier counts were "
        "recorded; the earlier counts were kept and the new ones are added to them",
    )
    conditions: list[Condition] = conditions_field()


class Experiment(Resource):
    """An experiment on one Domain: what to serve, to whom, and what decides it."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="Experiment",
        plural="experiments",
        scope="Namespaced",
        short_names=("exp",),
        columns=(
            PrinterColumn("Domain", ".spec.domainRef"),
            PrinterColumn("Template", ".spec.template"),
            READY_COLUMN,
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Decision", ".status.decision.outcome"),
            PrinterColumn("Winner", ".status.decision.winner", priority=1),
            PrinterColumn("Version", ".status.template.version", type="integer", priority=1),
            PrinterColumn("Revision", ".status.deployedRevision", priority=1),
            AGE_COLUMN,
        ),
        extra={
            "spec_validations": [
                {
                    "rule": "self.domainRef == oldSelf.domainRef",
                    "message": "spec.domainRef cannot change: the experiment's counts belong to "
                    "its Domain; delete the Experiment and create it on the other Domain",
                    "fieldPath": ".domainRef",
                },
                {
                    "rule": "self.variants.exists(v, v.weight > 0)",
                    "message": "at least one variant needs a weight above 0",
                    "fieldPath": ".variants",
                },
                {
                    "rule": "self.type == 'performance' || self.goal.metric == 'conversion_rate'",
                    "message": "only performance experiments can use a latency goal",
                    "fieldPath": ".goal.metric",
                },
            ],
        },
    )
    kind: str = "Experiment"
    spec: ExperimentSpec
    status: ExperimentStatus | None = None
