"""Renders an Experiment's variants into document roots (and nginx fragments).

``render_variant(spec, template, variant)`` returns a ``RenderedVariant``: the files of
that variant's document root (relative path -> bytes) and, for performance templates,
its nginx fragment (see ``smart_operator.templates.nginx``).
``render_experiment(spec, template)`` renders them all. A page the template cannot
render (an undefined name, an operation the sandbox refuses) raises
``InvalidTemplateConfig`` naming the file. ``template`` is the
``TemplateSpec`` of the resource the Experiment names (``templates.resolve``); its
``files`` are rendered by a sandboxed Jinja2 (a customer's private template is code
the operator runs: the sandbox allows no attribute access to Python internals, and
``range`` is bounded). Both validate first and raise ``InvalidTemplateConfig`` (carrying
the ``ConfigError`` list) rather than render a bad spec. Rendering is pure and
deterministic: the same spec gives the same bytes, so ``RenderedVariant.digest`` can
name an immutable revision.

Contract with the agent:

- Document root: ``index.html`` is the entry page; funnels add their step pages
  (``RenderedVariant.pages`` lists them in order as URL paths, the last one is the
  step whose button is the goal); ``assets/site.css`` and ``assets/favicon.svg`` are
  shared. Every link between these files is relative, so the root can be served at
  ``/`` or opened from disk.
- Conversion endpoint: every call to action is a button in a form that posts (an empty
  body) to ``/_smart/convert?v=<variant>&via=<placement>`` (``CONVERT_PATH``; the last
  funnel step's form posts there too). ``v`` is the variant that rendered the page,
  ``via`` one of ``PLACEMENTS``. The agent counts one conversion for ``v`` only for a
  same-site ``POST`` by a visitor it counted as exposed to ``v`` that day, and answers
  ``303`` to the goal target; a ``GET`` (a plain link) still reaches the goal, with a
  ``302`` that is not counted. The goal is never in the URL (no open redirect): it is
  ``GoalContract.redirect_url``, the spec's ``stripeLink``, handed to the agent with the
  experiment's configuration. The ``/_smart/`` prefix belongs to the agent.
- Funnel forms send no personal data: their inputs carry no ``name``, so the browser
  checks them (``required``, ``type=email``) and moves on without putting them in a URL
  or a log. The visitor enters real details on the payment page.
- Performance variants: the pages are byte-identical (their copy is set on the control
  only, and their convert links carry no ``v``) and only ``nginx_conf`` differs; the
  agent alternates the fragments over time windows and measures
  ``GoalContract.probe_paths`` with its own probe.

Values: a variant's effective values are the template's defaults, overridden by the
control's ``values``, overridden by its own. A variant therefore states only how it
differs from the control. Everything printed into HTML is autoescaped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple, get_args
from urllib.parse import urlencode, urlsplit

from jinja2 import DictLoader, StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from smart_operator.models.experiment import ExperimentSpec, Variant
from smart_operator.models.template import PageSpec, TemplateSpec, split_lines
from smart_operator.templates.nginx import nginx_fragment
from smart_operator.templates.validate import ConfigError, template_digest, validate_config

CONVERT_PATH = "/_smart/convert"
TIMING_SCRIPT = "/_smart/timing.js"  # served by the agent (smart_agent.timing)
# Where on a page a call to action sits; the ``via`` parameter of the convert link.
Placement = Literal["header", "hero", "pricing", "cta", "pay", "finish"]
PLACEMENTS: tuple[Placement, ...] = get_args(Placement)

# Main colour of each accent (the CSS holds the full palettes); used by the favicon.
ACCENT_COLORS = {
    "indigo": "#4f46e5",
    "emerald": "#047857",
    "rose": "#be123c",
    "amber": "#b45309",
    "sky": "#0369a1",
    "violet": "#6d28d9",
}


class InvalidTemplateConfig(ValueError):
    """The spec cannot be rendered; ``errors`` says why, field by field."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


@dataclass(frozen=True)
class RenderedVariant:
    """One variant, ready to upload: its document root and, if any, its nginx settings."""

    template: str
    variant: str
    files: Mapping[str, bytes]
    pages: tuple[str, ...]
    nginx_conf: str | None
    values: Mapping[str, str] = field(repr=False)

    @property
    def digest(self) -> str:
        """SHA-256 of the files and the nginx fragment: equal digests, equal deployments."""
        h = hashlib.sha256()
        for path in sorted(self.files):
            data = self.files[path]
            h.update(f"{path}\0{len(data)}\0".encode())
            h.update(data)
        h.update(b"nginx\0" + (self.nginx_conf or "").encode())
        return h.hexdigest()


@dataclass(frozen=True)
class GoalContract:
    """What the agent needs to know to measure an experiment's goal."""

    metric: str
    event: Literal["convert", "latency"]
    convert_path: str | None
    redirect_url: str | None
    probe_mode: Literal["cold", "returning"] | None
    probe_paths: tuple[str, ...]


class Item(NamedTuple):
    """One line of a ``lines`` value: ``Title | body``."""

    title: str
    body: str


def goal_for(spec: ExperimentSpec, meta: TemplateSpec) -> GoalContract:
    """The goal of ``spec`` as the agent measures it (see the module docstring)."""
    probe = meta.goal.probe
    has_cta = spec.template_config.stripe_link is not None
    return GoalContract(
        metric=spec.goal.metric,
        event=meta.goal.event,
        convert_path=CONVERT_PATH if has_cta else None,
        redirect_url=spec.template_config.stripe_link,
        probe_mode=probe.mode if probe else None,
        probe_paths=probe.paths if probe else (),
    )


def effective_values(spec: ExperimentSpec, meta: TemplateSpec, variant: Variant) -> dict[str, str]:
    """Template defaults, then the control's values, then the variant's own."""
    values = {key: value_spec.default for key, value_spec in meta.values.items()}
    values.update(spec.variants[0].values)
    values.update(variant.values)
    return values


def render_experiment(spec: ExperimentSpec, meta: TemplateSpec) -> dict[str, RenderedVariant]:
    """Every variant of ``spec``, by name, in the spec's order."""
    env = _checked(spec, meta)
    return {v.name: _render(spec, meta, env, v) for v in spec.variants}


def render_variant(spec: ExperimentSpec, meta: TemplateSpec, variant: Variant) -> RenderedVariant:
    """The document root (and nginx fragment) of one variant of ``spec``."""
    if not any(v.name == variant.name for v in spec.variants):
        raise ValueError(f"variant {variant.name!r} is not one of the spec's variants")
    return _render(spec, meta, _checked(spec, meta), variant)


def check_template(meta: TemplateSpec) -> list[ConfigError]:
    """Problems of the template itself that its schema cannot see: a Jinja2 file that
    does not compile, an nginx template whose values cannot make a fragment. Paths are
    in the template object (``spec.files[index.html.j2]``)."""
    errors: list[ConfigError] = []
    env = _environment(meta)
    for path in sorted(meta.files):
        if path.endswith(".j2"):
            try:
                env.get_template(path)
            except TemplateSyntaxError as exc:
                errors.append(ConfigError(f"spec.files[{path}]", f"line {exc.lineno}: {exc}"))
    if meta.nginx:
        defaults = {key: value.default for key, value in meta.values.items()}
        try:
            nginx_fragment(meta, "control", defaults)
        except (KeyError, ValueError) as exc:
            errors.append(
                ConfigError("spec.values", f"nginx templates need the nginx value set: {exc}")
            )
    return errors


def _checked(spec: ExperimentSpec, meta: TemplateSpec) -> ImmutableSandboxedEnvironment:
    errors = validate_config(spec, meta)
    if errors:
        raise InvalidTemplateConfig(errors)
    return _environment(meta)


def _render(
    spec: ExperimentSpec, meta: TemplateSpec, env: ImmutableSandboxedEnvironment, variant: Variant
) -> RenderedVariant:
    values = effective_values(spec, meta, variant)
    layout = values[meta.layout_value] if meta.layout_value else "default"
    steps = meta.layouts[layout]
    config = spec.template_config
    link = config.stripe_link

    def convert_url(via: Placement) -> str:
        if via not in PLACEMENTS:
            raise ValueError(f"unknown placement {via!r}")
        # Performance pages are the same for every variant (only nginx differs), so they
        # carry no variant and the agent can serve one root for all time windows.
        query = {"via": via} if meta.nginx else {"v": variant.name, "via": via}
        return CONVERT_PATH + "?" + urlencode(query)

    components = list(config.components) if meta.components else []
    brand = config.brand or meta.default_brand
    common: dict[str, object] = {
        "brand": brand,
        "v": values,
        "variant": variant.name,
        "components": components,
        "sections": {k: s.model_dump() for k, s in meta.sections.items()},
        "nav": [(c, meta.sections[c].nav) for c in components if meta.sections[c].nav is not None],
        "fathom_site_id": config.fathom_site_id,
        # Performance pages time themselves in visitors' browsers (the agent's
        # /_smart/timing.js, first-party): real-user timings decide these experiments.
        "timing_script": TIMING_SCRIPT if meta.nginx else None,
        "has_cta": link is not None,
        "convert_url": convert_url,
        "stripe_checkout": link is not None and _is_stripe(link),
        "steps": [s.model_dump() for s in steps],
    }
    files: dict[str, bytes] = {}
    for index, step in enumerate(steps):
        context = {
            **common,
            "step_index": index,
            "step": step.model_dump(),
            "is_last": index == len(steps) - 1,
            "next_page": steps[index + 1].page if index + 1 < len(steps) else None,
        }
        try:
            files[step.page] = env.get_template(step.source).render(context).encode()
        except TemplateError as exc:  # a template's own mistake, or what the sandbox refused
            problem = ConfigError(f"spec.files[{step.source}]", f"does not render: {exc}")
            raise InvalidTemplateConfig([problem]) from exc
    if "site.css" in meta.files:
        files["assets/site.css"] = meta.files["site.css"].encode()
    if "favicon.svg.j2" in meta.files:
        color = ACCENT_COLORS.get(values.get("accent", ""), ACCENT_COLORS["indigo"])
        favicon = env.get_template("favicon.svg.j2").render(initial=brand[:1].upper(), color=color)
        files["assets/favicon.svg"] = favicon.encode()
    return RenderedVariant(
        template=spec.template,
        variant=variant.name,
        files=MappingProxyType(files),
        pages=tuple(_url_path(s) for s in steps),
        nginx_conf=nginx_fragment(meta, variant.name, values) if meta.nginx else None,
        values=MappingProxyType(values),
    )


def _url_path(step: PageSpec) -> str:
    return "/" if step.page == "index.html" else "/" + step.page


def _is_stripe(link: str) -> bool:
    host = urlsplit(link).hostname or ""
    return host == "stripe.com" or host.endswith(".stripe.com")


def _items(raw: str) -> list[Item]:
    items = []
    for line in split_lines(raw):
        title, _, body = line.partition(" | ")
        items.append(Item(title.strip(), body.strip()))
    return items


def _initials(name: str) -> str:
    return "".join(word[0] for word in name.split()[:2]).upper()


_ENVIRONMENTS: dict[str, ImmutableSandboxedEnvironment] = {}
_ENVIRONMENTS_KEPT = 32


def _environment(meta: TemplateSpec) -> ImmutableSandboxedEnvironment:
    """The sandboxed Jinja2 environment of one template version, kept by its digest (the
    most recently made ``_ENVIRONMENTS_KEPT``), so its compiled pages are reused."""
    key = template_digest(meta)
    env = _ENVIRONMENTS.get(key)
    if env is None:
        env = _new_environment(meta)
        if len(_ENVIRONMENTS) >= _ENVIRONMENTS_KEPT:
            _ENVIRONMENTS.pop(next(iter(_ENVIRONMENTS)))
        _ENVIRONMENTS[key] = env
    return env


def _new_environment(meta: TemplateSpec) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=DictLoader(dict(meta.files)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["items"] = _items
    env.filters["initials"] = _initials
    return env
