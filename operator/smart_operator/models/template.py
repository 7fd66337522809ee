"""Experiment templates as resources: ``ClusterExperimentTemplate`` (the platform's
catalogue, cluster-scoped, installed by the chart) and ``ExperimentTemplate`` (a
customer's private template, in its namespace). One CRD cannot be both scopes, so the
two kinds share one spec, as cert-manager's ClusterIssuer and Issuer do.

An object is one *version* of a template: ``spec.name`` is the name an Experiment's
``spec.template`` gives, ``spec.version`` its version (a whole number, the largest is
the latest). Publish a change as a new object with a higher version; an Experiment
keeps the version it was first deployed with (``status.template``) until its
``spec.templateVersion`` asks for another.

The spec declares the experiment type, the page sections, the ``values`` a variant may
set (their type, bounds and default: the values schema an Experiment is checked
against), the pages of each layout, the goal, the Jinja2 ``files`` the pages render
from, and ``preview`` (what the dashboard's gallery shows). What a value's ``type``
allows is described on ``ValueSpec``; ``ValueSpec.problem`` checks a string against it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from smart_operator.models.common import (
    AGE_COLUMN,
    CamelModel,
    KindInfo,
    PrinterColumn,
    Resource,
)
from smart_operator.models.experiment import Component, ExperimentType

TEMPLATE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
"""A template's ``spec.name`` (underscores allowed: ``saas_landing``)."""

ValueType = Literal["text", "lines", "enum", "integer", "duration"]
Metric = Literal["conversion_rate", "p50_latency", "p95_latency"]

# Control characters other than the newline that separates ``lines`` items; none of
# them has a place in page copy, and CR/LF would split an HTTP header or nginx line.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_DIGITS = re.compile(r"^[0-9]{1,9}$")
_DURATION = re.compile(r"^([0-9]{1,7})(s|m|h|d)?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PAGE_NAME_PATTERN = r"^[a-z][a-z0-9_-]*\.html$"
FILE_PATH_PATTERN = r"^[a-z0-9_][a-z0-9_./-]*$"
MAX_FILE_BYTES = 65536
MAX_FILES = 64


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """Schema extras: CEL rules the API server checks when the object is applied."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class _Frozen(CamelModel):
    model_config = ConfigDict(frozen=True)


class ValueSpec(_Frozen):
    """What a variant may put under one key of ``values``, and its default.

    Types: ``text`` one line of copy of at most ``maxLength`` characters (escaped on
    render); ``lines`` up to ``maxItems`` lines, each ``Title | body`` or ``Title``;
    ``enum`` one of ``allowed``; ``integer`` digits from ``minimum`` to ``maximum``;
    ``duration`` an nginx time (``30s``, ``5m``, ``12h``, ``7d``; bare digits are
    seconds) within ``minSeconds``..``maxSeconds``, or one of ``keywords``."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.type != 'enum' || (size(self.allowed) > 0 && self.default in self.allowed)",
                "an enum value needs `allowed`, and its default must be one of them",
            ),
            (
                "self.type != 'integer' || self.default.matches('^[0-9]{1,9}$')",
                "an integer value's default must be digits",
            ),
        )
    )

    type: ValueType
    default: str = Field(max_length=4096)
    description: str = Field(max_length=500)
    required: bool = Field(default=True, description="text/lines: must not be blank")
    max_length: int = Field(default=200, ge=1, description="text: characters; lines: per line")
    max_items: int = Field(default=6, ge=1, description="lines: at most this many")
    allowed: tuple[str, ...] = Field(
        default=(), max_length=32, description="enum: the allowed strings"
    )
    minimum: int = Field(default=0, ge=0, description="integer: smallest allowed")
    maximum: int = Field(default=999_999_999, description="integer: largest allowed")
    min_seconds: int = Field(default=0, ge=0, description="duration: shortest allowed")
    max_seconds: int = Field(default=365 * 86400, description="duration: longest allowed")
    keywords: tuple[str, ...] = Field(
        default=(), max_length=8, description="duration: words also allowed"
    )
    control_only: bool = Field(default=False, description="may be set on the control variant only")
    sample: bool = Field(
        default=False, description="the default is demonstration copy to replace before going live"
    )
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


class PageSpec(_Frozen):
    """One page of a variant's document root, rendered from a Jinja2 file."""

    page: str = Field(
        pattern=PAGE_NAME_PATTERN, max_length=64, description="file name in the document root"
    )
    source: str = Field(max_length=128, description="the file of `files` that renders it")
    title: str = Field(max_length=80, description="step name shown in a funnel's progress bar")


class ProbeSpec(_Frozen):
    """How the agent's latency probe loads the page of a performance experiment."""

    mode: Literal["cold", "returning"] = Field(
        description="cold: every load without a cache; returning: a browser that reloads "
        "with its HTTP cache (honours Cache-Control/Expires, revalidates with ETag)"
    )
    paths: tuple[str, ...] = Field(
        min_length=1, max_length=16, description="URL paths of one page load"
    )


class GoalSpec(_Frozen):
    """What decides experiments on this template."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "(self.event == 'latency') == has(self.probe)",
                "a latency goal needs a probe, and only a latency goal has one",
            )
        )
    )

    metrics: tuple[Metric, ...] = Field(
        min_length=1, max_length=3, description="allowed spec.goal.metric"
    )
    event: Literal["convert", "latency"]
    description: str = Field(max_length=1000)
    probe: ProbeSpec | None = None

    @model_validator(mode="after")
    def _probe_for_latency(self) -> GoalSpec:
        if (self.event == "latency") != (self.probe is not None):
            raise ValueError("a latency goal needs a probe, and only a latency goal has one")
        return self


class SectionSpec(_Frozen):
    """How a page section is labelled: the small kicker above its title, its nav link."""

    kicker: str = Field(max_length=80)
    nav: str | None = Field(default=None, max_length=80)
    caption: str | None = Field(
        default=None, max_length=200, description="proof: the line above the logos"
    )
    icon: str | None = Field(
        default=None, max_length=40, description="hero: the icon of the floating badge"
    )


class PreviewSpec(_Frozen):
    """What the dashboard's gallery shows of the template."""

    summary: str = Field(default="", max_length=300, description="one line for the gallery card")
    tags: tuple[str, ...] = Field(default=(), max_length=8)
    brand: str | None = Field(
        default=None, max_length=80, description="the brand of the preview; else defaultBrand"
    )
    values: dict[str, str] = Field(
        default_factory=dict,
        description="values the preview sets over the defaults (checked like a variant's)",
        json_schema_extra={"maxProperties": 64},
    )


class TemplateSpec(_Frozen):
    """One version of a template: its values schema, pages, goal and Jinja2 files."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "has(self.layoutValue) ? (self.layoutValue in self.values "
                "&& self.values[self.layoutValue].type == 'enum') "
                ": (size(self.layouts) == 1 && 'default' in self.layouts)",
                "without layoutValue, layouts must be exactly {default}; with it, layoutValue "
                "must name an enum value of spec.values",
            ),
            (
                "self.layouts.all(l, size(self.layouts[l]) > 0 "
                "&& self.layouts[l][0].page == 'index.html')",
                "every layout of spec.layouts starts with index.html",
            ),
            (
                "self.layouts.all(l, self.layouts[l].all(p, p.source in self.files))",
                "every page's source must be a file of spec.files",
            ),
            (
                "self.components.all(c, has(self.sections) && c in self.sections)",
                "every entry of spec.components needs its labels in spec.sections",
            ),
            (
                "!has(self.preview.values) || self.preview.values.all(k, k in self.values)",
                "spec.preview.values may set only keys of spec.values",
            ),
            (
                "self.name == oldSelf.name && self.version == oldSelf.version",
                "spec.name and spec.version cannot change: publish a new version as a new object",
            ),
        )
    )

    name: str = Field(
        pattern=TEMPLATE_NAME_PATTERN,
        max_length=63,
        description="What an Experiment's spec.template names (saas_landing)",
    )
    version: int = Field(ge=1, le=1_000_000, description="This version; the largest is latest")
    title: str = Field(max_length=80)
    type: ExperimentType = Field(description="The experiment type it serves")
    description: str = Field(max_length=2000)
    default_brand: str = Field(max_length=80)
    requires_stripe_link: bool = Field(
        description="the page's call to action leads to spec.templateConfig.stripeLink"
    )
    components: tuple[Component, ...] = Field(
        default=(),
        max_length=8,
        description="page sections spec.templateConfig.components may list; empty when "
        "the template's pages are fixed",
    )
    sections: dict[str, SectionSpec] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 16}
    )
    values: dict[str, ValueSpec] = Field(
        description="The values schema: each key a variant may set in its values",
        json_schema_extra={"maxProperties": 64},
    )
    layout_value: str | None = Field(
        default=None,
        max_length=63,
        description="the value that picks one of `layouts`; else `default`",
    )
    layouts: dict[str, tuple[PageSpec, ...]] = Field(json_schema_extra={"maxProperties": 8})
    goal: GoalSpec
    nginx: bool = Field(default=False, description="variants carry an nginx fragment")
    files: dict[str, Annotated[str, Field(max_length=MAX_FILE_BYTES)]] = Field(
        description="The Jinja2 sources by path (pages, includes, site.css, favicon.svg.j2), "
        "rendered in a sandbox",
        json_schema_extra={"maxProperties": MAX_FILES},
    )
    preview: PreviewSpec = PreviewSpec()

    @model_validator(mode="after")
    def _consistent(self) -> TemplateSpec:
        if self.layout_value is None:
            if set(self.layouts) != {"default"}:
                raise ValueError("without layoutValue, layouts must be exactly {default}")
        else:
            spec = self.values.get(self.layout_value)
            if spec is None or spec.type != "enum" or set(spec.allowed) != set(self.layouts):
                raise ValueError("layoutValue must be an enum value with one layout per choice")
        for pages in self.layouts.values():
            if not pages or pages[0].page != "index.html":
                raise ValueError("every layout starts with index.html")
            for page in pages:
                if page.source not in self.files:
                    raise ValueError(f"page {page.page}: source {page.source} is not in files")
        missing = set(self.components) - set(self.sections)
        if missing:
            raise ValueError(f"sections lacks labels for {sorted(missing)}")
        for path in self.files:
            if not re.match(FILE_PATH_PATTERN, path) or ".." in path:
                raise ValueError(f"files: {path!r} is not a relative path of a-z, 0-9, _ . / -")
        for key in self.preview.values:
            if key not in self.values:
                raise ValueError(f"preview.values.{key}: not a key of values")
        return self


_COLUMNS = (
    PrinterColumn("Template", ".spec.name"),
    PrinterColumn("Version", ".spec.version", type="integer"),
    PrinterColumn("Type", ".spec.type"),
    PrinterColumn("Title", ".spec.title", priority=1),
    AGE_COLUMN,
)


class ClusterExperimentTemplate(Resource):
    """A version of a template in the platform's catalogue, offered to every customer."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="ClusterExperimentTemplate",
        plural="clusterexperimenttemplates",
        scope="Cluster",
        short_names=("cxt",),
        columns=_COLUMNS,
    )
    kind: str = "ClusterExperimentTemplate"
    spec: TemplateSpec


class ExperimentTemplate(Resource):
    """A version of a customer's private template, seen only by Experiments in its
    namespace."""

    KIND: ClassVar[KindInfo] = KindInfo(
        kind="ExperimentTemplate",
        plural="experimenttemplates",
        scope="Namespaced",
        short_names=("xt",),
        columns=_COLUMNS,
    )
    kind: str = "ExperimentTemplate"
    spec: TemplateSpec
