"""The template gallery: which templates a customer may use, their previews, and how
experiments on them went across the platform. Pure: it reads what the cache holds.

- A customer sees the platform's catalogue (``ClusterExperimentTemplate``) and the
  private templates of its own namespace (``ExperimentTemplate``), the latest version
  of each name; a private template of another customer is never listed or previewed.
- The preview is the template's first page rendered by the operator's own renderer
  (``smart_operator.templates``, sandboxed) from the template's ``spec.preview``: what
  an experiment on it would serve. The gallery shows it in a frame that runs no script.
- Metrics count the Experiments pinned to the template (``status.template``: deployed
  at least once): how many ran, how many of those that reached a decision found a
  winner, and the median of the winners' uplift over the control with a
  distribution-free interval (the binomial order-statistic interval for a median).
  A private template's metrics come from its own namespace only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from smart_operator.models.experiment import Experiment, ExperimentSpec
from smart_operator.models.template import TemplateSpec
from smart_operator.templates import InvalidTemplateConfig, render_variant, template_digest

Scope = Literal["catalogue", "private"]
KIND_OF: dict[Scope, str] = {
    "catalogue": "ClusterExperimentTemplate",
    "private": "ExperimentTemplate",
}
PREVIEW_LINK = "https://buy.stripe.com/preview"
MEDIAN_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class Metrics:
    run: int
    decided: int
    winners: int
    median_uplift: float | None
    interval: Interval | None

    @property
    def winner_share(self) -> float | None:
        return self.winners / self.decided if self.decided else None


@dataclass(frozen=True)
class Card:
    scope: Scope
    object: str
    spec: TemplateSpec
    metrics: Metrics

    @property
    def preview_url(self) -> str:
        return f"/templates/{self.scope}/{self.object}/preview/"


def latest(objects: Iterable[dict[str, Any]]) -> dict[str, tuple[str, TemplateSpec]]:
    """The latest valid version of each template name: name -> (object name, spec)."""
    found: dict[str, tuple[str, TemplateSpec]] = {}
    for obj in objects:
        try:
            spec = TemplateSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            continue  # the operator reports it on the Experiments that name it
        current = found.get(spec.name)
        if current is None or current[1].version < spec.version:
            found[spec.name] = (str(obj["metadata"]["name"]), spec)
    return found


def median_interval(values: list[float], confidence: float) -> Interval | None:
    """The order-statistic interval ``[x(k), x(n+1-k)]`` that holds the median with
    at least ``confidence``; None when there are too few values for it."""
    n = len(values)
    ordered = sorted(values)
    best: Interval | None = None
    tail = 0.0
    for k in range(1, n // 2 + 1):
        tail += math.comb(n, k - 1) / 2**n  # P(Binomial(n, 1/2) <= k - 1)
        coverage = 1 - 2 * tail
        if coverage < confidence:
            break
        best = Interval(ordered[k - 1], ordered[n - k], coverage)
    return best


def metrics(experiments: Iterable[Experiment], kind: str, name: str) -> Metrics:
    """How the Experiments pinned to template ``name`` (of ``kind``) went."""
    run = decided = winners = 0
    uplifts: list[float] = []
    for experiment in experiments:
        status = experiment.status
        pin = status.template if status else None
        if status is None or pin is None or pin.kind != kind or pin.name != name:
            continue
        run += 1
        decision = status.decision
        if decision is None or decision.outcome == "pending":
            continue
        decided += 1
        if decision.outcome == "winner":
            winners += 1
            result = next((v for v in status.variants if v.name == decision.winner), None)
            if result is not None and result.uplift is not None:
                uplifts.append(result.uplift)
    median = None
    if uplifts:
        ordered = sorted(uplifts)
        middle = len(ordered) // 2
        median = (
            ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        )
    return Metrics(run, decided, winners, median, median_interval(uplifts, MEDIAN_CONFIDENCE))


def cards(
    catalogue: Iterable[dict[str, Any]],
    private: Iterable[dict[str, Any]],
    everyone: list[Experiment],
    own: list[Experiment],
) -> list[Card]:
    """The gallery of one customer: the catalogue (metrics across ``everyone``), then
    its private templates (metrics across ``own``), each by title."""
    shown = [
        Card("catalogue", obj, spec, metrics(everyone, KIND_OF["catalogue"], spec.name))
        for obj, spec in latest(catalogue).values()
    ]
    shown.sort(key=lambda c: c.spec.title)
    mine = [
        Card("private", obj, spec, metrics(own, KIND_OF["private"], spec.name))
        for obj, spec in latest(private).values()
    ]
    mine.sort(key=lambda c: c.spec.title)
    return shown + mine


_PREVIEWS: dict[str, Mapping[str, bytes]] = {}
_PREVIEWS_KEPT = 64


def preview_files(spec: TemplateSpec) -> Mapping[str, bytes] | None:
    """The document root of the template's preview (its first variant with
    ``spec.preview``'s brand and values), or None when the template cannot render it."""
    key = template_digest(spec)
    if key in _PREVIEWS:
        return _PREVIEWS[key]
    experiment = ExperimentSpec.model_validate(
        {
            "domainRef": "preview",
            "type": spec.type.value,
            "template": spec.name,
            "templateConfig": {
                "stripeLink": PREVIEW_LINK,
                "brand": spec.preview.brand,
                **({"components": list(spec.components)} if spec.components else {}),
            },
            "goal": {"metric": spec.goal.metrics[0]},
            "variants": [
                {"name": "preview", "values": dict(spec.preview.values)},
                {"name": "other"},
            ],
        }
    )
    try:
        files = render_variant(experiment, spec, experiment.variants[0]).files
    except (InvalidTemplateConfig, ValueError):
        return None
    if len(_PREVIEWS) >= _PREVIEWS_KEPT:
        _PREVIEWS.pop(next(iter(_PREVIEWS)))
    _PREVIEWS[key] = files
    return files
