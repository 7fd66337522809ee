"""Checks an Experiment's template configuration against the template's metadata.

``validate_config(spec, template)`` returns every problem at once, each naming the field by its
path in the resource as the user wrote it (``spec.templateConfig.stripeLink``,
``spec.variants[1].values.gzip``) and saying what is allowed, so the operator can put
the list in a status condition verbatim. It repeats some checks the CRD schema already
makes (the Fathom id pattern, the https link) because a spec can also be built in
Python, and adds those a schema cannot express: which ``values`` keys, types and
choices each template accepts, and which page sections it has.

Rules worth knowing:

- Landing pages and funnels need ``stripeLink``: their call to action goes through the
  agent's conversion endpoint and on to that link, and a page whose button leads
  nowhere is not worth testing. Performance templates accept it (their page then shows
  the button) but do not need it.
- ``components`` must be sections the template has, each once, and must include
  ``hero`` (it carries the page's only ``<h1>``). Funnels have fixed pages: they ignore
  the CRD's default list and reject any other.
- Values marked ``control_only`` (the page copy of performance templates) may be set
  on the control only, since those variants must differ in nginx settings alone.

``template_digest`` names one template version by its content (an Experiment records it
so that a template edited in place is noticed). Pure: no I/O.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from smart_operator.models.experiment import ExperimentSpec, TemplateConfig
from smart_operator.models.template import TemplateSpec

FATHOM_SITE_ID = re.compile(r"^[A-Z]{8}$")
_DEFAULT_COMPONENTS: list[str] = list(TemplateConfig().components)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f<>\"'\\`]")


@dataclass(frozen=True)
class ConfigError:
    """One problem with a spec: where it is (a field path) and what is allowed."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def template_digest(meta: TemplateSpec) -> str:
    """``sha256:<hex>`` of the template version's whole spec, defaults filled in."""
    canonical = json.dumps(meta.model_dump(mode="json", by_alias=True), sort_keys=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def validate_config(spec: ExperimentSpec, meta: TemplateSpec) -> list[ConfigError]:
    """Every problem with the template configuration of ``spec`` against the template
    version ``meta`` (its values schema); empty when it is fine."""
    errors: list[ConfigError] = []
    if spec.type != meta.type:
        errors.append(
            ConfigError(
                "spec.template",
                f"{meta.name} is a {meta.type.value} template, not a {spec.type.value} one; "
                "pick a template of that type or change spec.type",
            )
        )
    if spec.goal.metric not in meta.goal.metrics:
        errors.append(
            ConfigError(
                "spec.goal.metric",
                f"{meta.name} is decided by "
                + " or ".join(meta.goal.metrics)
                + f", not {spec.goal.metric}",
            )
        )
    errors += _check_template_config(spec.template_config, meta)
    errors += _check_variants(spec, meta)
    return errors


def sample_values(spec: ExperimentSpec, meta: TemplateSpec) -> list[str]:
    """Value keys whose made-up sample default (a testimonial, statistics, customer
    names) some variant would show. Not an error, but the page would put invented
    claims on a real domain: the operator should say so until the copy is set."""
    shown = set(spec.template_config.components) if meta.components else None
    control = spec.variants[0].values if spec.variants else {}
    found: set[str] = set()
    for variant in spec.variants:
        for key, value_spec in meta.values.items():
            if not value_spec.sample or not value_spec.default.strip():
                continue
            if shown is not None and value_spec.section not in (None, *shown):
                continue
            if variant.values.get(key, control.get(key, value_spec.default)) == value_spec.default:
                found.add(key)
    return sorted(found)


def _check_template_config(config: TemplateConfig, meta: TemplateSpec) -> list[ConfigError]:
    errors: list[ConfigError] = []
    base = "spec.templateConfig"
    if config.fathom_site_id is not None and not FATHOM_SITE_ID.match(config.fathom_site_id):
        errors.append(
            ConfigError(
                f"{base}.fathomSiteId",
                "must be a Fathom site id: eight capital letters such as UQBOCDXH "
                f"(got {_shown(config.fathom_site_id)})",
            )
        )
    if config.stripe_link is None:
        if meta.requires_stripe_link:
            errors.append(
                ConfigError(
                    f"{base}.stripeLink",
                    f"{meta.name} needs the call to action's target: an https "
                    "payment link such as https://buy.stripe.com/...",
                )
            )
    else:
        problem = link_problem(config.stripe_link)
        if problem is not None:
            errors.append(ConfigError(f"{base}.stripeLink", problem))
    if config.brand is not None and (not config.brand.strip() or "\n" in config.brand):
        errors.append(
            ConfigError(f"{base}.brand", "must be one non-empty line of at most 80 characters")
        )
    errors += _check_components(list(config.components), meta)
    return errors


def link_problem(link: str) -> str | None:
    """Why ``link`` cannot be the call to action's target, or None when it can."""
    expected = "must be an https URL such as https://buy.stripe.com/..."
    if len(link) > 2048 or _URL_FORBIDDEN.search(link):
        return f"{expected}, at most 2048 characters, without spaces or quotes"
    try:
        parts = urlsplit(link)
        port = parts.port
    except ValueError:
        return f"{expected} (got {_shown(link)})"
    if parts.scheme != "https":
        return f"{expected} (got {_shown(link)})"
    if parts.username is not None or parts.password is not None:
        return f"{expected}, without a user name or password before the host"
    host = parts.hostname or ""
    if "." not in host.strip(".") or port == 0:
        return f"{expected}, with a full host name (got {_shown(link)})"
    return None


def _check_components(components: list[str], meta: TemplateSpec) -> list[ConfigError]:
    path = "spec.templateConfig.components"
    if not meta.components:
        if components == _DEFAULT_COMPONENTS:
            return []  # the CRD's default; this template's pages are fixed
        return [
            ConfigError(
                path,
                f"{meta.name} has fixed pages, not sections; remove components",
            )
        ]
    errors: list[ConfigError] = []
    seen: set[str] = set()
    for i, name in enumerate(components):
        if name not in meta.components:
            errors.append(
                ConfigError(
                    f"{path}[{i}]",
                    f"{name!r} is not a section of {meta.name}; allowed: "
                    + ", ".join(meta.components),
                )
            )
        elif name in seen:
            errors.append(ConfigError(f"{path}[{i}]", f"{name!r} is listed twice"))
        seen.add(name)
    if "hero" not in components:
        errors.append(
            ConfigError(path, "must include hero: it carries the page's headline and first button")
        )
    return errors


def _check_variants(spec: ExperimentSpec, meta: TemplateSpec) -> list[ConfigError]:
    errors: list[ConfigError] = []
    names: set[str] = set()
    for i, variant in enumerate(spec.variants):
        base = f"spec.variants[{i}]"
        if variant.name in names:
            errors.append(ConfigError(f"{base}.name", f"{variant.name!r} is used twice"))
        names.add(variant.name)
        for key, raw in sorted(variant.values.items()):
            path = f"{base}.values.{key}" if _KEY.match(key) else f"{base}.values[{key!r}]"
            value_spec = meta.values.get(key)
            if value_spec is None:
                errors.append(ConfigError(path, _unknown_key(key, meta)))
                continue
            if value_spec.control_only and i > 0:
                errors.append(
                    ConfigError(
                        path,
                        f"{meta.name} variants differ in nginx settings only; set "
                        "page copy on the control (spec.variants[0])",
                    )
                )
                continue
            problem = value_spec.problem(raw)
            if problem is not None:
                shown = f" (got {_shown(raw)})" if value_spec.type not in ("text", "lines") else ""
                errors.append(ConfigError(path, problem + shown))
    return errors


def _unknown_key(key: str, meta: TemplateSpec) -> str:
    known = sorted(meta.values)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{meta.name} has no value {key!r}; {hint}allowed: " + ", ".join(known)


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 60 else raw[:57] + "...")
