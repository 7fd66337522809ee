"""The template catalog: each packaged template's ``meta.yaml`` read into typed metadata.

A template folder holds ``meta.yaml`` and its Jinja2 files; ``_shared/`` holds the
layout, the components, the CSS and the value sets that several templates include
(``_shared/values/<set>.yaml``). This module reads those files (packaged data only,
through ``importlib.resources``) and checks them when loaded, so a broken meta file
fails the unit tests rather than a deployment.

A *value* is a key a variant may set in ``spec.variants[i].values``. Its ``type`` says
what the string may hold:

- ``text``: one line of copy, at most ``max_length`` characters (HTML-escaped on render);
- ``lines``: up to ``max_items`` lines of copy, each ``Title | body`` or just ``Title``;
- ``enum``: one of ``allowed``;
- ``integer``: digits, from ``minimum`` to ``maximum``;
- ``duration``: an nginx time (``30s``, ``5m``, ``12h``, ``7d``; bare digits are
  seconds) within ``min_seconds``..``max_seconds``, or one of ``keywords``.

``control_only`` values may be set on the control variant only (performance variants
differ in nginx settings alone); ``sample`` marks a default that is demonstration copy
(a testimonial, statistics, customer names) to replace before a page goes live, and
``section`` names the page section that shows the value.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smart_operator.models.experiment import Component, ExperimentType, TemplateName

PACKAGE = "smart_operator.templates"
SHARED = "_shared"

ValueType = Literal["text", "lines", "enum", "integer", "duration"]
Metric = Literal["conversion_rate", "p50_latency", "p95_latency"]

# Control characters other than the newline that separates ``lines`` items; none of
# them has a place in page copy, and CR/LF would split an HTTP header or nginx line.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_DIGITS = re.compile(r"^[0-9]{1,9}$")
_DURATION = re.compile(r"^([0-9]{1,7})(s|m|h|d)?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PAGE_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.html$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueSpec(_Strict):
    """What a variant may put under one key of ``values``, and its default."""

    type: ValueType
    default: str
    description: str
    required: bool = Field(default=True, description="text/lines: must not be blank")
    max_length: int = Field(default=200, ge=1, description="text: characters; lines: per line")
    max_items: int = Field(default=6, ge=1, description="lines: at most this many")
    allowed: tuple[str, ...] = Field(default=(), description="enum: the allowed strings")
    minimum: int = Field(default=0, ge=0, description="integer: smallest allowed")
    maximum: int = Field(default=999_999_999, description="integer: largest allowed")
    min_seconds: int = Field(default=0, ge=0, description="duration: shortest allowed")
    max_seconds: int = Field(default=365 * 86400, description="duration: longest allowed")
    keywords: tuple[str, ...] = Field(default=(), description="duration: words also allowed")
    control_only: bool = False
    sample: bool = False
    section: Component | None = Field(
        default=None, description="the page section that shows it, when there is one"
    )

    @model_validator(mode="after")
    def _default_is_valid(self) -> ValueSpec:
        if self.type == "enum" and not self.allowed:
            raise ValueError("an enum value needs `allowed`")
        problem = self.problem(self.default)
        if problem is not None:
            raise ValueError(f"default {self.default!r} is invalid: {problem}")
        return self

    def allowed_text(self) -> str:
        """What this value may hold, in words, for error messages."""
        if self.type == "enum":
            return "one of " + ", ".join(self.allowed)
        if self.type == "integer":
            return f"a whole number from {self.minimum} to {self.maximum}"
        if self.type == "duration":
            words = f", or {' or '.join(self.keywords)}" if self.keywords else ""
            return (
                "a duration such as 30s, 5m, 12h or 7d, from "
                f"{_human_seconds(self.min_seconds)} to {_human_seconds(self.max_seconds)}{words}"
            )
        if self.type == "lines":
            return (
                f"up to {self.max_items} lines of at most {self.max_length} characters, "
                "each `Title | body` or `Title`"
            )
        blank = "" if self.required else " (may be empty)"
        return f"one line of text of at most {self.max_length} characters{blank}"

    def problem(self, raw: str) -> str | None:
        """Why ``raw`` is not allowed here, or None when it is."""
        if self.type == "enum":
            return None if raw in self.allowed else f"must be {self.allowed_text()}"
        if self.type == "integer":
            if _DIGITS.match(raw) and self.minimum <= int(raw) <= self.maximum:
                return None
            return f"must be {self.allowed_text()}"
        if self.type == "duration":
            if raw in self.keywords:
                return None
            seconds = duration_seconds(raw)
            if seconds is not None and self.min_seconds <= seconds <= self.max_seconds:
                return None
            return f"must be {self.allowed_text()}"
        if _CONTROL.search(raw):
            return "must not contain control characters such as tabs or carriage returns"
        if self.type == "lines":
            items = split_lines(raw)
            if self.required and not items:
                return f"must not be empty; expected {self.allowed_text()}"
            if len(items) > self.max_items:
                return f"has {len(items)} lines; expected {self.allowed_text()}"
            if any(len(item) > self.max_length for item in items):
                return f"has a line that is too long; expected {self.allowed_text()}"
            return None
        if "\n" in raw:
            return f"must be {self.allowed_text()}, without line breaks"
        if self.required and not raw.strip():
            return f"must not be empty; expected {self.allowed_text()}"
        if len(raw) > self.max_length:
            return f"is {len(raw)} characters long; expected {self.allowed_text()}"
        return None


def split_lines(raw: str) -> list[str]:
    """The non-blank lines of a ``lines`` value, stripped."""
    return [line.strip() for line in raw.split("\n") if line.strip()]


def canonical_duration(raw: str) -> str | None:
    """An nginx time rebuilt from its parsed number and unit (``"30"`` -> ``"30s"``)."""
    match = _DURATION.match(raw)
    if match is None:
        return None
    return f"{int(match.group(1))}{match.group(2) or 's'}"


def duration_seconds(raw: str) -> int | None:
    """Seconds in an nginx time such as ``30s`` or ``7d`` (bare digits are seconds)."""
    match = _DURATION.match(raw)
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def _human_seconds(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class PageSpec(_Strict):
    """One page of a variant's document root, rendered from a Jinja2 file."""

    page: str = Field(pattern=_PAGE_NAME.pattern, description="file name in the document root")
    source: str = Field(description="Jinja2 file that renders it")
    title: str = Field(description="step name shown in a funnel's progress bar")


class ProbeSpec(_Strict):
    """How the agent's latency probe loads the page of a performance experiment."""

    mode: Literal["cold", "returning"] = Field(
        description="cold: every load without a cache; returning: a browser that reloads "
        "with its HTTP cache (honours Cache-Control/Expires, revalidates with ETag)"
    )
    paths: tuple[str, ...] = Field(min_length=1, description="URL paths of one page load")


class GoalSpec(_Strict):
    """What decides experiments on this template."""

    metrics: tuple[Metric, ...] = Field(min_length=1, description="allowed spec.goal.metric")
    event: Literal["convert", "latency"]
    description: str
    probe: ProbeSpec | None = None

    @model_validator(mode="after")
    def _probe_for_latency(self) -> GoalSpec:
        if (self.event == "latency") != (self.probe is not None):
            raise ValueError("a latency goal needs a probe, and only a latency goal has one")
        return self


class SectionSpec(_Strict):
    """How a page section is labelled: the small kicker above its title, its nav link."""

    kicker: str
    nav: str | None = None
    caption: str | None = Field(default=None, description="proof: the line above the logos")
    icon: str | None = Field(default=None, description="hero: the icon of the floating badge")


class ValueSetRef(_Strict):
    name: str = Field(pattern=r"^[a-z_]+$")
    control_only: bool = False


class TemplateMeta(_Strict):
    """One template as ``meta.yaml`` declares it, with its value sets merged in."""

    name: TemplateName
    title: str
    type: ExperimentType
    description: str
    default_brand: str
    requires_stripe_link: bool = Field(
        description="the page's call to action leads to spec.templateConfig.stripeLink"
    )
    components: tuple[Component, ...] = Field(
        description="page sections spec.templateConfig.components may list; empty when "
        "the template's pages are fixed"
    )
    sections: dict[str, SectionSpec] = Field(default_factory=dict)
    values: dict[str, ValueSpec]
    layout_value: str | None = Field(
        default=None, description="the value that picks one of `layouts`; else `default`"
    )
    layouts: dict[str, tuple[PageSpec, ...]]
    goal: GoalSpec
    nginx: bool = Field(default=False, description="variants carry an nginx fragment")

    @model_validator(mode="after")
    def _consistent(self) -> TemplateMeta:
        if self.layout_value is None:
            if set(self.layouts) != {"default"}:
                raise ValueError("without layout_value, layouts must be exactly {default}")
        else:
            spec = self.values.get(self.layout_value)
            if spec is None or spec.type != "enum" or set(spec.allowed) != set(self.layouts):
                raise ValueError("layout_value must be an enum value with one layout per choice")
        for pages in self.layouts.values():
            if not pages or pages[0].page != "index.html":
                raise ValueError("every layout starts with index.html")
        missing = set(self.components) - set(self.sections)
        if missing:
            raise ValueError(f"sections lacks labels for {sorted(missing)}")
        return self


def _read(*parts: str) -> str:
    path = resources.files(PACKAGE)
    for part in parts:
        path = path.joinpath(part)
    return path.read_text(encoding="utf-8")


def _yaml(*parts: str) -> dict[str, Any]:
    data = yaml.safe_load(_read(*parts))
    if not isinstance(data, dict):
        raise ValueError(f"{'/'.join(parts)}: expected a mapping at the top")
    return data


@cache
def _value_set(name: str) -> dict[str, dict[str, Any]]:
    data = _yaml(SHARED, "values", f"{name}.yaml")
    return {str(k): dict(v) for k, v in data.items()}


@cache
def load_meta(name: TemplateName) -> TemplateMeta:
    """The metadata of one template, value sets merged and every default checked.

    A template's own ``values`` entry either adds a key (a full spec) or, for a key that
    a value set declares, overrides some of its fields (usually just ``default``)."""
    raw = _yaml(name.value, "meta.yaml")
    merged: dict[str, dict[str, Any]] = {}
    for ref in (ValueSetRef.model_validate(r) for r in raw.pop("value_sets", [])):
        for key, spec in _value_set(ref.name).items():
            merged[key] = {
                **spec,
                "control_only": ref.control_only or bool(spec.get("control_only")),
            }
    for key, override in (raw.pop("values", None) or {}).items():
        merged[str(key)] = {**merged.get(str(key), {}), **override}
    try:
        return TemplateMeta.model_validate({**raw, "name": name, "values": merged})
    except ValueError as exc:
        raise ValueError(f"{name.value}/meta.yaml: {exc}") from exc


def all_templates() -> tuple[TemplateMeta, ...]:
    """Every packaged template, in the order of ``TemplateName``."""
    return tuple(load_meta(name) for name in TemplateName)


def read_shared(name: str) -> str:
    """A packaged file under ``_shared/`` (the CSS, the favicon)."""
    return _read(SHARED, name)
