"""Experiment templates: rendering, validation and the built-ins' sources.

An Experiment renders from a template *resource* (``ClusterExperimentTemplate`` in the
platform's catalogue, ``ExperimentTemplate`` private to a namespace; the models are in
``smart_operator.models.template``). Modules, inside out:

- ``validate``: ``validate_config(spec, template)`` lists every ``ConfigError`` by field
  path; ``template_digest`` names a template version by its content.
- ``nginx``: the nginx fragment of a performance variant, from checked values only.
- ``render``: ``render_variant``/``render_experiment`` produce document roots in a
  Jinja2 sandbox; its docstring is the contract with the agent.
- ``resolve``: which template object and version an Experiment renders from.
- ``catalog``: the seven built-ins' sources (``meta.yaml`` and Jinja2 files in the
  folders here, shared parts in ``_shared/``), turned into the catalogue objects the
  chart installs. Landing pages ``saas_landing``, ``ecommerce_landing``,
  ``agency_landing``; performance ``nginx_optimization``, ``cache_optimization``;
  funnels ``checkout_flow``, ``signup_flow``.

Pure code: the only I/O is ``catalog`` reading its packaged files.
"""

from smart_operator.templates.render import (
    CONVERT_PATH,
    PLACEMENTS,
    GoalContract,
    InvalidTemplateConfig,
    RenderedVariant,
    check_template,
    effective_values,
    goal_for,
    render_experiment,
    render_variant,
)
from smart_operator.templates.resolve import Template, resolve
from smart_operator.templates.validate import (
    ConfigError,
    sample_values,
    template_digest,
    validate_config,
)

__all__ = [
    "CONVERT_PATH",
    "PLACEMENTS",
    "ConfigError",
    "GoalContract",
    "InvalidTemplateConfig",
    "RenderedVariant",
    "Template",
    "check_template",
    "effective_values",
    "goal_for",
    "render_experiment",
    "render_variant",
    "resolve",
    "sample_values",
    "template_digest",
    "validate_config",
]
