"""Which template version an Experiment renders from.

``resolve(spec, pin, private, catalogue)`` picks among the ``ExperimentTemplate``
objects of the Experiment's namespace (``private``) and the
``ClusterExperimentTemplate`` objects (``catalogue``), given as the API server lists
them:

- A name that some private template of the namespace has resolves among the private
  ones only (a customer's own template wins in its own namespace); otherwise among
  the catalogue. Templates of other namespaces are never seen.
- The version is ``spec.templateVersion`` when set; else the pinned one
  (``status.template``, recorded when the Experiment was first rendered), so that a
  newer version never changes what a running experiment serves; else the latest.
- The pinned version's content must still have the digest recorded: an object edited
  in place (rather than published as a new version) is refused, and the experiment
  keeps serving what it served.
- The chosen object must be a valid template (its CRD schema is checked at apply, the
  rest here: value defaults, layouts, Jinja2 syntax).

Problems come back as ``ConfigError``s with the field to fix. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from smart_operator.models.experiment import ExperimentSpec, TemplatePin
from smart_operator.models.template import TemplateSpec
from smart_operator.templates.render import check_template
from smart_operator.templates.validate import ConfigError, template_digest

TemplateKind = Literal["ClusterExperimentTemplate", "ExperimentTemplate"]


@dataclass(frozen=True)
class Template:
    """One template version as read from its object."""

    kind: TemplateKind
    object: str
    spec: TemplateSpec
    digest: str

    def pin(self) -> TemplatePin:
        return TemplatePin(
            kind=self.kind,
            object=self.object,
            name=self.spec.name,
            version=self.spec.version,
            digest=self.digest,
        )


def resolve(
    spec: ExperimentSpec,
    pin: TemplatePin | None,
    private: Sequence[dict[str, Any]],
    catalogue: Sequence[dict[str, Any]],
    namespace: str,
) -> Template | list[ConfigError]:
    """The template version ``spec`` renders from, or why there is none."""
    kind: TemplateKind = "ExperimentTemplate"
    found = _named(private, spec.template)
    if not found:
        kind, found = "ClusterExperimentTemplate", _named(catalogue, spec.template)
    if not found:
        offered = sorted({_spec_field(b, "name") for b in [*private, *catalogue]} - {None})
        return [
            ConfigError(
                "spec.template",
                f"no template named {spec.template!r} in namespace {namespace} or the "
                "platform's catalogue; available: " + (", ".join(map(str, offered)) or "none"),
            )
        ]
    versions = {_spec_field(b, "version"): b for b in found}
    pinned = pin is not None and pin.name == spec.template and pin.kind == kind
    if spec.template_version is not None:
        wanted, field = spec.template_version, "spec.templateVersion"
    elif pin is not None and pinned:
        wanted, field = pin.version, "status.template.version"
    else:
        wanted = max(v for v in versions if isinstance(v, int))
        field = "spec.template"
    body = versions.get(wanted)
    if body is None:
        listed = ", ".join(str(v) for v in sorted(v for v in versions if isinstance(v, int)))
        return [
            ConfigError(
                field,
                f"{spec.template} has no version {wanted} (versions: {listed}); set "
                "spec.templateVersion to one of them",
            )
        ]
    name = str(body.get("metadata", {}).get("name", "?"))
    try:
        template_spec = TemplateSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return [
            ConfigError(
                f"{kind} {name}: spec." + ".".join(str(p) for p in error["loc"]),
                error["msg"],
            )
            for error in exc.errors()
        ]
    template = Template(kind, name, template_spec, template_digest(template_spec))
    if (
        pin is not None
        and pinned
        and pin.version == template_spec.version
        and pin.digest != template.digest
    ):
        return [
            ConfigError(
                "spec.template",
                f"{kind} {name} (version {pin.version}) was changed in place after this "
                "experiment first rendered it; what it serves stays as it was. Restore that "
                "version, or publish the change as a new version and set "
                "spec.templateVersion to it",
            )
        ]
    problems = check_template(template_spec)
    if problems:
        return [ConfigError(f"{kind} {name}: {e.path}", e.message) for e in problems]
    return template


def _named(bodies: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [b for b in bodies if _spec_field(b, "name") == name]


def _spec_field(body: dict[str, Any], key: str) -> Any:
    spec = body.get("spec")
    return spec.get(key) if isinstance(spec, dict) else None
