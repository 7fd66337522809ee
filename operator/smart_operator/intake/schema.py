"""The bodies the agents send, as pydantic models; the wire contract in code.

``docs/intake-api.md`` describes the same contract for the agent's authors (the agent
may not import this package). Field names are camelCase on the wire; the snake_case
names are accepted too. Parsing is strict (a number in quotes is not a number) and
unknown fields are refused, so a typo in an agent fails loudly instead of being
dropped. Times must be plausible (``PlausibleTime``). ``parse`` turns a body into a
model or a ``BodyError`` that says, field by field, what is wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from smart_operator.models.common import NAME_PATTERN
from smart_operator.models.experiment import INCARNATION_PATTERN

MAX_VARIANTS = 10
MAX_LATENCIES = 1000
"""Timings per variant in one report: the agent sends a uniform sample (a reservoir)
of every response time since the experiment started."""
MAX_COUNT = 10**12
MAX_SEQUENCE = 2**63 - 1

Latency = Annotated[float, Field(ge=0, le=600_000, allow_inf_nan=False)]
Token = Annotated[str, Field(max_length=128, pattern=r"^[\x21-\x7e]*$")]

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No agent ran before this; an earlier time is a clock that was never set."""
FUTURE_SLACK = timedelta(days=1)
"""How far ahead of the intake's clock an agent's clock may run."""


def _plausible(moment: datetime) -> datetime:
    """A time an agent can have meant: from 2000 until a day past the intake's clock.
    Anything else (year 1 at +14:00 lies before year 1 in UTC, which no datetime can
    hold) would later break whoever converts it to UTC, so it is refused here, with
    the field named, as a 400."""
    if moment < EARLIEST:
        raise ValueError(f"times before {EARLIEST.date().isoformat()} are not plausible")
    if moment > datetime.now(UTC) + FUTURE_SLACK:
        raise ValueError("times more than a day ahead of the intake's clock are not plausible")
    return moment


PlausibleTime = Annotated[AwareDatetime, AfterValidator(_plausible)]


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class RealUserReport(WireModel):
    """A variant's real-user timings: a uniform sample (a reservoir) of the page views
    visitors' browsers timed, and how many were timed in all."""

    views: int = Field(ge=0, le=MAX_COUNT)
    ttfb_ms: list[Latency] = Field(default_factory=list, max_length=MAX_LATENCIES)
    lcp_ms: list[Latency] = Field(default_factory=list, max_length=MAX_LATENCIES)
    transfer_bytes: list[Annotated[int, Field(ge=0, le=2**30)]] = Field(
        default_factory=list, max_length=MAX_LATENCIES
    )


class VariantReport(WireModel):
    """One variant's counts since the experiment started (cumulative, never reset)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=40)
    visitors: int = Field(ge=0, le=MAX_COUNT)
    conversions: int = Field(ge=0, le=MAX_COUNT)
    latencies_ms: list[Latency] | None = Field(default=None, max_length=MAX_LATENCIES)
    """The agent's probe (synthetic: its own server over loopback)."""
    real_user: RealUserReport | None = None

    @model_validator(mode="after")
    def _conversions_within_visitors(self) -> Self:
        if self.conversions > self.visitors:
            raise ValueError(
                f"conversions ({self.conversions}) cannot exceed visitors ({self.visitors})"
            )
        return self


class ResultsReport(WireModel):
    """``POST /v1/results``: the cumulative counts of one experiment."""

    experiment: str = Field(pattern=NAME_PATTERN, max_length=253)
    incarnation: str | None = Field(default=None, pattern=INCARNATION_PATTERN)
    """Made at random by the agent with its counts database, kept as long as it is: a
    new one means sequences and counts start again from zero (a new server), so its
    counts add to the recorded ones. Absent: the same incarnation as every other report
    without one (agents from before the field)."""
    sequence: int = Field(ge=1, le=MAX_SEQUENCE)
    revision: Token | None = None
    sent_at: PlausibleTime | None = None
    variants: list[VariantReport] = Field(min_length=1, max_length=MAX_VARIANTS)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return self


class RunningExperiment(WireModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    revision: Token | None = None


class Heartbeat(WireModel):
    """``POST /v1/heartbeat``: the agent is alive, which version, since when."""

    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
    started_at: PlausibleTime
    sent_at: PlausibleTime | None = None
    experiments: list[RunningExperiment] = Field(default_factory=list, max_length=100)


class BodyError(Exception):
    """A body that is not JSON (``code`` "invalid_json") or not the contract's shape
    ("invalid_body"); ``detail`` lists each problem with its location."""

    def __init__(self, code: str, message: str, detail: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


M = TypeVar("M", bound=WireModel)


def parse(model: type[M], body: bytes) -> M:
    """The body as ``model``, or a ``BodyError`` that names every problem."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        if any(p["type"] == "json_invalid" for p in problems):
            reason = problems[0]["msg"]
            raise BodyError("invalid_json", f"the body is not JSON: {reason}", []) from None
        detail = [
            {"loc": _location(p["loc"]), "message": p["msg"].removeprefix("Value error, ")}
            for p in problems
        ]
        summary = "; ".join(f"{d['loc']}: {d['message']}" for d in detail[:5])
        raise BodyError(
            "invalid_body", f"the body does not fit {model.__name__}: {summary}", detail
        ) from None
