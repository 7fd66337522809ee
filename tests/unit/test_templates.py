"""Experiment templates: every template renders every variant into a self-contained
document root, output is escaped, the goal goes through the agent's conversion
endpoint, validation names the field, and nginx fragments admit no injection."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from smart_operator.models.experiment import ExperimentSpec, ExperimentType, TemplateConfig, Variant
from smart_operator.models.template import TemplateSpec
from smart_operator.templates import (
    CONVERT_PATH,
    ConfigError,
    GoalContract,
    InvalidTemplateConfig,
    RenderedVariant,
    effective_values,
    goal_for,
    render_experiment,
    render_variant,
    sample_values,
    validate_config,
)
from smart_operator.templates.catalog import TemplateName, all_builtins, builtin
from smart_operator.templates.nginx import nginx_fragment
from smart_operator.templates.render import ACCENT_COLORS, TIMING_SCRIPT

STRIPE = "https://buy.stripe.com/test_28o5kK1cX"
ALL_SECTIONS = ["hero", "problem", "solution", "proof", "features", "pricing", "faq", "cta"]
TYPE_OF = {TemplateName(meta.name): meta.type for meta in all_builtins()}
LANDING = tuple(t for t in TemplateName if TYPE_OF[t] is ExperimentType.LANDING_PAGE)
PERFORMANCE = tuple(t for t in TemplateName if TYPE_OF[t] is ExperimentType.PERFORMANCE)
FUNNELS = tuple(t for t in TemplateName if TYPE_OF[t] is ExperimentType.CONVERSION)
FATHOM_SNIPPET = (
    '<script src="https://cdn.usefathom.com/script.js" data-site="UQBOCDXH" defer></script>'
)


def make_spec(template: TemplateName, **overrides: Any) -> ExperimentSpec:
    """A valid spec for ``template``, with wire-name overrides."""
    kind = TYPE_OF[template]
    data: dict[str, Any] = {
        "domainRef": "example-com",
        "type": kind.value,
        "template": template.value,
        "templateConfig": {"stripeLink": STRIPE},
        "variants": [{"name": "control"}, {"name": "b"}],
    }
    if kind is ExperimentType.PERFORMANCE:
        data["goal"] = {"metric": "p95_latency"}
    data.update(overrides)
    return ExperimentSpec.model_validate(data)


def variants_for(template: TemplateName) -> list[dict[str, Any]]:
    """Control plus a variant that changes something typical for the template."""
    if template in LANDING:
        b = {"headline": "Ship it this week", "hero_layout": "centered", "accent": "emerald"}
    elif template in PERFORMANCE:
        b = {"gzip_comp_level": "6", "open_file_cache": "on", "asset_expires": "7d"}
    else:
        b = {"step_count": "2", "accent": "rose"}
    return [{"name": "control"}, {"name": "b", "values": b}]


def meta_of(spec: ExperimentSpec) -> TemplateSpec:
    """The built-in ``spec`` names, as its ClusterExperimentTemplate carries it."""
    return builtin(TemplateName(spec.template))


def validate(spec: ExperimentSpec) -> list[ConfigError]:
    return validate_config(spec, meta_of(spec))


def render_all(spec: ExperimentSpec) -> dict[str, RenderedVariant]:
    return render_experiment(spec, meta_of(spec))


def render_one(spec: ExperimentSpec, variant: Variant) -> RenderedVariant:
    return render_variant(spec, meta_of(spec), variant)


def goal_of(spec: ExperimentSpec) -> GoalContract:
    return goal_for(spec, meta_of(spec))


def error_paths(spec: ExperimentSpec) -> list[str]:
    return [e.path for e in validate(spec)]


def html(rendered: RenderedVariant, page: str = "index.html") -> str:
    return rendered.files[page].decode()


class _Page(HTMLParser):
    """Collects what the checks below need, and fails on unbalanced tags."""

    # Elements without an end tag (SVG's self-closing ones arrive as start-end tags).
    VOID = frozenset(
        {
            "area",
            "base",
            "br",
            "col",
            "embed",
            "hr",
            "img",
            "input",
            "link",
            "meta",
            "source",
            "track",
            "wbr",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.ids: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.labels_for: set[str] = set()
        self.fields: list[dict[str, str | None]] = []
        self.label_depth = 0
        self.attrs_of: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)
            if tag == "label":
                self.label_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else ''}>")
            return
        self.stack.pop()
        if tag == "label":
            self.label_depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def _element(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.attrs_of.append((tag, attrs))
        if attrs.get("id"):
            self.ids.append(str(attrs["id"]))
        for name in ("href", "src", "action"):
            if attrs.get(name) is not None:
                self.links.append((tag, str(attrs[name])))
        if tag == "label" and attrs.get("for"):
            self.labels_for.add(str(attrs["for"]))
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            self.fields.append({**attrs, "_in_label": "yes" if self.label_depth else None})


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


# ---------- the catalog ----------


def test_every_template_has_metadata_that_fits_its_type() -> None:
    metas = all_builtins()
    assert [m.name for m in metas] == list(TemplateName)
    for meta in metas:
        assert meta.version == 1 and TYPE_OF[TemplateName(meta.name)] is meta.type
        assert meta.goal.metrics
        if meta.type is ExperimentType.PERFORMANCE:
            assert meta.nginx and meta.goal.probe is not None
        else:
            assert meta.requires_stripe_link and meta.goal.event == "convert"
    for name in LANDING:
        assert builtin(name).components == tuple(ALL_SECTIONS)


def test_accent_colours_keep_white_text_readable_and_match_the_css() -> None:
    def luminance(hex_colour: str) -> float:
        channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    css = render_one(make_spec(TemplateName.SAAS_LANDING), Variant(name="control"))
    stylesheet = css.files["assets/site.css"].decode()
    assert set(ACCENT_COLORS) == set(builtin(TemplateName.SAAS_LANDING).values["accent"].allowed)
    for name, colour in ACCENT_COLORS.items():
        assert (1.05) / (luminance(colour) + 0.05) >= 4.5, name
        assert f'[data-accent="{name}"] {{ --accent: {colour};' in stylesheet


# ---------- rendering ----------


@pytest.mark.parametrize("template", list(TemplateName), ids=str)
def test_every_template_renders_every_variant_into_a_self_contained_root(
    template: TemplateName,
) -> None:
    components = ALL_SECTIONS if builtin(template).components else None
    config: dict[str, Any] = {"stripeLink": STRIPE, "fathomSiteId": "UQBOCDXH"}
    if components:
        config["components"] = components
    spec = make_spec(template, templateConfig=config, variants=variants_for(template))
    assert validate(spec) == []
    rendered = render_all(spec)
    assert list(rendered) == ["control", "b"]
    for name, variant in rendered.items():
        assert variant.variant == name and variant.template == template
        assert variant.pages[0] == "/"
        for path in variant.pages:
            assert (path.lstrip("/") or "index.html") in variant.files
        assert {"index.html", "assets/site.css", "assets/favicon.svg"} <= set(variant.files)
        for file_name, data in variant.files.items():
            if file_name.endswith(".html"):
                _check_page(file_name, data.decode(), variant)
        assert STRIPE not in b"".join(variant.files.values()).decode()
    assert rendered["control"].digest != rendered["b"].digest


def _check_page(name: str, page: str, variant: RenderedVariant) -> None:
    parsed = parse(page)
    where = f"{variant.template}/{variant.variant}/{name}"
    assert parsed.problems == [] and parsed.stack == [], where
    assert page.startswith('<!doctype html>\n<html lang="en"'), where
    assert len(parsed.ids) == len(set(parsed.ids)), f"{where}: duplicate ids"
    assert sum(1 for tag, _ in parsed.attrs_of if tag == "h1") == 1, f"{where}: one h1"
    assert any(tag == "main" for tag, _ in parsed.attrs_of), where
    for tag, link in parsed.links:
        if link.startswith("#"):
            assert link[1:] in parsed.ids, f"{where}: {link} has no target"
        elif link.startswith(CONVERT_PATH):
            assert tag in ("a", "form"), where
        elif link == TIMING_SCRIPT:  # the agent serves it, on performance pages only
            assert tag == "script" and variant.template in PERFORMANCE, where
        elif link.startswith("https://"):
            assert link == "https://cdn.usefathom.com/script.js", f"{where}: external {link}"
        else:
            assert not link.startswith(("/", "http:", "//")), f"{where}: {link}"
            assert link.split("?")[0] in variant.files, f"{where}: {link} is not in the root"
    for field in parsed.fields:
        # Visible form fields carry a label; funnel inputs send nothing (no name),
        # except the radio group detached from its form.
        assert field.get("_in_label") or field.get("id") in parsed.labels_for, where
        assert field.get("name") is None or field.get("form") == "none", where


def test_landing_calls_to_action_post_to_the_conversion_endpoint() -> None:
    """Every call to action is a button whose form posts to the agent's endpoint (the
    agent counts only POSTs); no plain link converts."""
    spec = make_spec(
        TemplateName.SAAS_LANDING, templateConfig={"stripeLink": STRIPE, "components": ALL_SECTIONS}
    )
    page = html(render_one(spec, spec.variants[1]))
    forms = re.findall(r'<form class="convert-form" action="([^"]*)" method="post"><button', page)
    assert sorted(forms) == sorted(
        f"/_smart/convert?v=b&amp;via={via}" for via in ("header", "hero", "pricing", "cta")
    )
    assert page.count("/_smart/convert") == 4 and 'href="/_smart/convert' not in page
    goal = goal_of(spec)
    assert (goal.event, goal.convert_path, goal.redirect_url) == ("convert", CONVERT_PATH, STRIPE)
    assert goal.metric == "conversion_rate"


@pytest.mark.parametrize(
    ("template", "pages", "via"),
    [
        (TemplateName.CHECKOUT_FLOW, ("/", "/details.html", "/review.html"), "pay"),
        (TemplateName.SIGNUP_FLOW, ("/", "/about.html", "/plan.html"), "finish"),
    ],
    ids=str,
)
def test_funnel_steps_lead_to_the_goal_on_the_last_step(
    template: TemplateName, pages: tuple[str, ...], via: str
) -> None:
    spec = make_spec(template, variants=variants_for(template))
    long_flow, short_flow = (render_one(spec, v) for v in spec.variants)
    assert long_flow.pages == pages
    assert short_flow.pages == (pages[0], pages[-1] if via == "finish" else "/details.html")
    for flow in (long_flow, short_flow):
        steps = [p.lstrip("/") or "index.html" for p in flow.pages]
        for here, there in itertools.pairwise(steps):
            assert f'"{there}"' in html(flow, here), f"{here} does not lead to {there}"
        last = html(flow, steps[-1])
        assert f'action="{CONVERT_PATH}?v={flow.variant}&amp;via={via}" method="post"' in last
        for early in steps[:-1]:
            assert CONVERT_PATH not in html(flow, early)


def test_sections_follow_the_configured_components() -> None:
    spec = make_spec(
        TemplateName.AGENCY_LANDING,
        templateConfig={"stripeLink": STRIPE, "components": ["hero", "faq", "proof"]},
    )
    page = html(render_one(spec, spec.variants[0]))
    assert page.index('id="hero"') < page.index('id="faq"') < page.index('id="proof"')
    for absent in ("problem", "solution", "features", "pricing", "cta"):
        assert f'id="{absent}"' not in page
    assert '<a href="#faq">FAQ</a>' in page and '<a href="#pricing">' not in page


def test_text_is_escaped_everywhere_it_is_printed() -> None:
    attack = '<script>alert("x")</script>'
    spec = make_spec(
        TemplateName.ECOMMERCE_LANDING,
        templateConfig={
            "stripeLink": STRIPE,
            "brand": f'Acme"><img src=x onerror=alert(1)>{attack}',
        },
        variants=[
            {"name": "control"},
            {
                "name": "b",
                "values": {
                    "headline": attack,
                    "subheadline": f'" onmouseover="alert(1) {attack}',
                    "proof_logos": f"{attack}\nFine",
                    "faq_items": f"{attack} | {attack}",
                },
            },
        ],
    )
    rendered = render_one(spec, spec.variants[1])
    for page in (html(rendered), rendered.files["assets/favicon.svg"].decode()):
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert 'onmouseover="' not in page
    page = html(rendered)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "<script" not in page  # no Fathom id, so no script at all


@pytest.mark.parametrize("template", list(TemplateName), ids=str)
def test_fathom_snippet_only_with_a_site_id(template: TemplateName) -> None:
    without = make_spec(template)
    with_id = make_spec(template, templateConfig={"stripeLink": STRIPE, "fathomSiteId": "UQBOCDXH"})
    for variant in render_all(without).values():
        assert all(b"usefathom" not in data for data in variant.files.values())
    for variant in render_all(with_id).values():
        for page in variant.pages:
            assert FATHOM_SNIPPET in html(variant, page.lstrip("/") or "index.html")


def test_variants_inherit_the_control_and_override_it() -> None:
    spec = make_spec(
        TemplateName.SAAS_LANDING,
        variants=[
            {"name": "control", "values": {"headline": "Control headline", "accent": "sky"}},
            {"name": "b", "values": {"headline": "Variant headline"}},
        ],
    )
    values = effective_values(spec, meta_of(spec), spec.variants[1])
    assert values["headline"] == "Variant headline"
    assert values["accent"] == "sky"
    assert values["cta_label"] == builtin(TemplateName.SAAS_LANDING).values["cta_label"].default
    page = html(render_one(spec, spec.variants[1]))
    assert "Variant headline" in page and "Control headline" not in page
    assert 'data-accent="sky"' in page


def test_rendering_is_deterministic() -> None:
    spec = make_spec(TemplateName.CHECKOUT_FLOW, variants=variants_for(TemplateName.CHECKOUT_FLOW))
    first, second = render_all(spec), render_all(spec)
    assert {k: v.digest for k, v in first.items()} == {k: v.digest for k, v in second.items()}
    assert dict(first["b"].files) == dict(second["b"].files)


def test_render_refuses_an_invalid_spec_and_an_unknown_variant() -> None:
    spec = make_spec(TemplateName.SAAS_LANDING, templateConfig={})
    with pytest.raises(InvalidTemplateConfig) as caught:
        render_all(spec)
    assert [e.path for e in caught.value.errors] == ["spec.templateConfig.stripeLink"]
    assert "spec.templateConfig.stripeLink" in str(caught.value)
    with pytest.raises(ValueError, match="not one of the spec's variants"):
        render_one(make_spec(TemplateName.SAAS_LANDING), Variant(name="stranger"))


def test_sample_copy_is_reported_until_it_is_replaced() -> None:
    spec = make_spec(TemplateName.SAAS_LANDING)
    assert "proof_quote" in sample_values(spec, meta_of(spec)) and "hero_badge" in sample_values(
        spec, meta_of(spec)
    )
    own = {
        "hero_badge": "",
        "proof_quote": "Ours.",
        "proof_author": "A. Person",
        "proof_role": "",
        "proof_stats": "1 | thing",
        "proof_logos": "",
    }
    spec = make_spec(
        TemplateName.SAAS_LANDING, variants=[{"name": "control", "values": own}, {"name": "b"}]
    )
    assert sample_values(spec, meta_of(spec)) == []
    no_proof = make_spec(
        TemplateName.SAAS_LANDING,
        templateConfig={"stripeLink": STRIPE, "components": ["hero", "cta"]},
        variants=[{"name": "control", "values": {"hero_badge": ""}}, {"name": "b"}],
    )
    assert sample_values(no_proof, meta_of(no_proof)) == []


# ---------- validation ----------


def test_a_valid_spec_has_no_errors() -> None:
    for template in TemplateName:
        assert validate(make_spec(template, variants=variants_for(template))) == []


def test_landing_pages_and_funnels_need_a_stripe_link_performance_does_not() -> None:
    for template in (*LANDING, *FUNNELS):
        errors = validate(make_spec(template, templateConfig={}))
        assert [e.path for e in errors] == ["spec.templateConfig.stripeLink"]
        assert "https" in errors[0].message and template.value in errors[0].message
    for template in PERFORMANCE:
        spec = make_spec(template, templateConfig={})
        assert validate(spec) == []
        assert goal_of(spec).convert_path is None
        assert CONVERT_PATH not in html(render_one(spec, spec.variants[0]))


@pytest.mark.parametrize(
    ("link", "hint"),
    [
        ("http://buy.stripe.com/x", "https"),
        ("https://user:pw@buy.stripe.com/x", "user name"),
        ("https://localhost/x", "full host name"),
        ('https://buy.stripe.com/x"onclick=1', "without spaces or quotes"),
        ("https://buy.stripe.com/a b", "without spaces"),
        ("javascript:alert(1)", "https"),
        ("https://buy.stripe.com:0/x", "full host name"),
    ],
)
def test_the_stripe_link_must_be_a_plain_https_url(link: str, hint: str) -> None:
    spec = make_spec(TemplateName.SAAS_LANDING)
    spec.template_config = TemplateConfig.model_construct(
        stripe_link=link, components=list(spec.template_config.components)
    )
    errors = validate(spec)
    assert [e.path for e in errors] == ["spec.templateConfig.stripeLink"]
    assert hint in errors[0].message


def test_the_fathom_site_id_must_match_the_pattern() -> None:
    spec = make_spec(TemplateName.SAAS_LANDING)
    spec.template_config = TemplateConfig.model_construct(
        stripe_link=STRIPE,
        fathom_site_id="abc123",
        components=list(spec.template_config.components),
    )
    (error,) = validate(spec)
    assert error.path == "spec.templateConfig.fathomSiteId"
    assert "eight capital letters" in error.message and "'abc123'" in error.message
    assert str(error).startswith("spec.templateConfig.fathomSiteId: ")


def test_components_must_be_known_unique_and_include_the_hero() -> None:
    spec = make_spec(TemplateName.SAAS_LANDING)
    spec.template_config = TemplateConfig.model_construct(
        stripe_link=STRIPE, components=["problem", "testimonials", "problem"]
    )
    errors = {e.path: e.message for e in validate(spec)}
    assert (
        "'testimonials' is not a section of saas_landing; allowed: hero, problem"
        in errors["spec.templateConfig.components[1]"]
    )
    assert "listed twice" in errors["spec.templateConfig.components[2]"]
    assert "must include hero" in errors["spec.templateConfig.components"]


def test_funnels_ignore_the_default_components_and_reject_others() -> None:
    assert validate(make_spec(TemplateName.CHECKOUT_FLOW)) == []
    spec = make_spec(
        TemplateName.SIGNUP_FLOW, templateConfig={"stripeLink": STRIPE, "components": ["hero"]}
    )
    (error,) = validate(spec)
    assert error.path == "spec.templateConfig.components"
    assert "fixed pages" in error.message


def test_values_are_checked_per_template_with_the_field_path() -> None:
    spec = make_spec(
        TemplateName.NGINX_OPTIMIZATION,
        variants=[
            {"name": "control"},
            {
                "name": "b",
                "values": {
                    "gzip": "yes",
                    "gzp_comp_level": "5",
                    "gzip_comp_level": "12",
                    "keepalive_timeout": "2h",
                    "open_file_cache_inactive": "soon",
                    "headline": "Faster",
                },
            },
        ],
    )
    errors = {e.path: e.message for e in validate(spec)}
    assert set(errors) == {
        "spec.variants[1].values.gzip",
        "spec.variants[1].values.gzp_comp_level",
        "spec.variants[1].values.gzip_comp_level",
        "spec.variants[1].values.keepalive_timeout",
        "spec.variants[1].values.open_file_cache_inactive",
        "spec.variants[1].values.headline",
    }
    assert errors["spec.variants[1].values.gzip"] == "must be one of on, off (got 'yes')"
    assert "did you mean gzip_comp_level?" in errors["spec.variants[1].values.gzp_comp_level"]
    assert "from 1 to 9" in errors["spec.variants[1].values.gzip_comp_level"]
    assert "from 0s to 10m" in errors["spec.variants[1].values.keepalive_timeout"]
    assert "set page copy on the control" in errors["spec.variants[1].values.headline"]


def test_text_values_have_limits() -> None:
    spec = make_spec(
        TemplateName.SAAS_LANDING,
        variants=[
            {"name": "control", "values": {"headline": "x" * 121, "cta_label": " "}},
            {
                "name": "b",
                "values": {"problem_points": "\n".join(["a | b"] * 5), "eyebrow": "a\tb"},
            },
        ],
    )
    errors = {e.path: e.message for e in validate(spec)}
    assert "is 121 characters long" in errors["spec.variants[0].values.headline"]
    assert "must not be empty" in errors["spec.variants[0].values.cta_label"]
    assert "has 5 lines; expected up to 4 lines" in errors["spec.variants[1].values.problem_points"]
    assert "control characters" in errors["spec.variants[1].values.eyebrow"]


def test_goal_metric_and_variant_names_are_checked() -> None:
    perf = make_spec(TemplateName.CACHE_OPTIMIZATION, goal={"metric": "conversion_rate"})
    (error,) = validate(perf)
    assert error.path == "spec.goal.metric"
    assert "p95_latency or p50_latency" in error.message
    twice = make_spec(TemplateName.SAAS_LANDING)
    twice.variants = [Variant(name="a"), Variant(name="a")]
    assert error_paths(twice) == ["spec.variants[1].name"]
    mismatched = make_spec(TemplateName.SAAS_LANDING)
    mismatched.type = ExperimentType.PERFORMANCE
    assert "spec.template" in error_paths(mismatched)


# ---------- nginx fragments ----------

_DIRECTIVE = re.compile(r"^(    )?[a-z_]+( [A-Za-z0-9_.=/+\-\"]+| \"immutable\")*;$")


def _check_fragment(fragment: str) -> None:
    depth = 0
    for line in fragment.splitlines():
        if line.startswith("#"):
            continue
        if line == "location /assets/ {":
            depth += 1
        elif line == "}":
            depth -= 1
        else:
            assert _DIRECTIVE.match(line), line
        assert depth in (0, 1)
    assert depth == 0


@pytest.mark.parametrize("template", list(PERFORMANCE), ids=str)
def test_performance_variants_produce_distinct_valid_fragments(template: TemplateName) -> None:
    spec = make_spec(
        template,
        variants=[
            {"name": "control"},
            {"name": "gzip-off", "values": {"gzip": "off", "keepalive_timeout": "0"}},
            {
                "name": "tuned",
                "values": {
                    "gzip_comp_level": "6",
                    "gzip_min_length": "256",
                    "keepalive_timeout": "30",
                    "open_file_cache": "on",
                    "open_file_cache_max": "2000",
                    "html_expires": "epoch",
                    "asset_expires": "30d",
                    "asset_immutable": "on",
                },
            },
        ],
    )
    rendered = render_all(spec)
    fragments = {name: r.nginx_conf for name, r in rendered.items()}
    assert all(fragments.values()) and len(set(fragments.values())) == 3
    for fragment in fragments.values():
        assert fragment is not None
        _check_fragment(fragment)
    control, gzip_off, tuned = (f or "" for f in fragments.values())
    assert "gzip on;\ngzip_comp_level 1;" in control and "open_file_cache off;" in control
    assert "gzip off;" in gzip_off and "gzip_comp_level" not in gzip_off
    assert "keepalive_timeout 0s;" in gzip_off
    assert "gzip_comp_level 6;" in tuned and "keepalive_timeout 30s;" in tuned
    assert "open_file_cache max=2000 inactive=20s;" in tuned
    assert "expires epoch;" in tuned and "    expires 30d;" in tuned
    assert '    add_header Cache-Control "immutable";' in tuned
    # The pages are the same in every window; only the settings differ.
    assert len({r.files["index.html"] for r in rendered.values()}) == 1
    goal = goal_of(spec)
    assert goal.event == "latency" and goal.probe_paths
    for path in goal.probe_paths:
        assert (path.lstrip("/") or "index.html") in rendered["control"].files


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gzip", "on; include /etc/passwd"),
        ("gzip_comp_level", "5;\nroot /"),
        ("keepalive_timeout", "10s; return 302 https://evil.example"),
        ("asset_expires", "max }\nlocation / { root /"),
        ("html_expires", "off\n"),
        ("open_file_cache_max", "1e9"),
    ],
)
def test_nginx_values_reject_injection(key: str, value: str) -> None:
    spec = make_spec(
        TemplateName.NGINX_OPTIMIZATION,
        variants=[{"name": "control"}, {"name": "b", "values": {key: value}}],
    )
    assert error_paths(spec) == [f"spec.variants[1].values.{key}"]
    with pytest.raises(InvalidTemplateConfig):
        render_all(spec)
    # The builder checks again on its own, in case it is ever called without validation.
    with pytest.raises(ValueError, match=key):
        nginx_fragment(builtin(TemplateName.NGINX_OPTIMIZATION), "b", {key: value})


def test_landing_pages_and_funnels_have_no_nginx_fragment() -> None:
    for template in (*LANDING, *FUNNELS):
        spec = make_spec(template)
        assert render_one(spec, spec.variants[0]).nginx_conf is None


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_fragments(tmp_path: Path) -> None:
    """Debian's nginx parses each fragment where the agent includes it."""
    spec = make_spec(
        TemplateName.CACHE_OPTIMIZATION,
        variants=[
            {"name": "control"},
            {
                "name": "b",
                "values": {
                    "open_file_cache": "on",
                    "asset_expires": "max",
                    "asset_immutable": "on",
                    "html_expires": "1h",
                },
            },
        ],
    )
    mime_types = Path("/etc/nginx/mime.types")
    for name, rendered in render_all(spec).items():
        (tmp_path / f"{name}.conf").write_text(rendered.nginx_conf or "")
        root = tmp_path / name
        root.mkdir()
        config = tmp_path / f"{name}.nginx.conf"
        config.write_text(
            f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n"
            + (f"  include {mime_types};\n" if mime_types.exists() else "")
            + f"  access_log off;\n  server {{\n    listen 127.0.0.1:8;\n    root {root};\n"
            f"    location / {{\n      include {tmp_path}/{name}.conf;\n    }}\n"
            f"    location = {CONVERT_PATH} {{\n      return 302 {STRIPE};\n    }}\n  }}\n}}\n"
        )
        result = subprocess.run(
            ["nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
