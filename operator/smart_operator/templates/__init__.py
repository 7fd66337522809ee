"""Experiment templates: packaged Jinja2 pages, their metadata, validation and rendering.

Each template is a folder here with ``meta.yaml`` (title, experiment type, page
sections, the ``values`` a variant may set with their types and defaults, the pages,
the goal) and its Jinja2 files; ``_shared/`` holds the layout, the components, the
CSS and the value sets several templates include. Seven templates: landing pages
``saas_landing``, ``ecommerce_landing``, ``agency_landing``; performance
``nginx_optimization``, ``cache_optimization``; funnels ``checkout_flow``,
``signup_flow``.

Modules, inside out:

- ``catalog``: reads ``meta.yaml`` into ``TemplateMeta`` and checks value strings.
- ``validate``: ``validate_config(spec)`` lists every ``ConfigError`` by field path.
- ``nginx``: the nginx fragment of a performance variant, from checked values only.
- ``render``: ``render_variant``/``render_experiment`` produce document roots; its
  docstring is the contract with the agent (pages, ``/_smart/convert``, the fragment).

Pure code: the only I/O is reading these packaged files.
"""

from smart_operator.templates.catalog import TemplateMeta, ValueSpec, all_templates, load_meta
from smart_operator.templates.render import (
    CONVERT_PATH,
    PLACEMENTS,
    GoalContract,
    InvalidTemplateConfig,
    RenderedVariant,
    effective_values,
    goal_for,
    render_experiment,
    render_variant,
)
from smart_operator.templates.validate import ConfigError, sample_values, validate_config

__all__ = [
    "CONVERT_PATH",
    "PLACEMENTS",
    "ConfigError",
    "GoalContract",
    "InvalidTemplateConfig",
    "RenderedVariant",
    "TemplateMeta",
    "ValueSpec",
    "all_templates",
    "effective_values",
    "goal_for",
    "load_meta",
    "render_experiment",
    "render_variant",
    "sample_values",
    "validate_config",
]
