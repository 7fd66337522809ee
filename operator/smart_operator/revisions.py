"""An experiment's revision: every file the server needs, named by its content hash.

The layout is the agent's (``docs/agent.md``)::

    experiment.json                 the manifest: variants, weights, goal, serving mode
    variants/<variant>/...          one document root per variant
    nginx/<variant>.conf            a performance variant's nginx settings

The same spec, serving mode and template version always give the same revision id, so
deploying an unchanged experiment uploads nothing. Pure: rendering only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from smart_operator.models.experiment import Experiment, ExperimentPhase
from smart_operator.models.template import TemplateSpec
from smart_operator.templates import goal_for, render_experiment

ServingMode = Literal["split", "control", "winner"]


@dataclass(frozen=True)
class Serving:
    """What nginx serves: the split by weights, only the control (a paused Domain or a
    suspended Customer), or only a promoted winner."""

    mode: ServingMode = "split"
    winner: str | None = None

    def served(self, variants: list[str]) -> list[str]:
        if self.mode == "control":
            return variants[:1]
        if self.mode == "winner" and self.winner:
            return [self.winner]
        return variants


def decide_serving(
    experiment: Experiment, *, domain_paused: bool, customer_suspended: bool
) -> tuple[Serving, str]:
    """The serving mode and why, in words for the status."""
    if customer_suspended:
        return Serving("control"), "the customer is suspended: only the control is served"
    if domain_paused:
        return Serving("control"), "the Domain is paused: only the control is served"
    decision = experiment.status.decision if experiment.status else None
    if (
        experiment.spec.auto_promote
        and decision is not None
        and decision.outcome == "winner"
        and decision.winner
    ):
        return Serving("winner", decision.winner), f"{decision.winner} won and is promoted"
    return Serving("split"), "variants are served by their weights"


def domain_holder(experiments: Iterable[Experiment], domain: str) -> Experiment | None:
    """The Experiment that Domain ``domain``'s server serves, of ``experiments`` (one
    namespace's): a server serves one experiment at a time.

    One already deployed keeps the server; otherwise the oldest (then the first by name)
    gets it. An Experiment being deleted does not compete, nor does one whose template
    config failed before anything was deployed.
    """

    def competes(experiment: Experiment) -> bool:
        status = experiment.status
        deployed = bool(status and status.deployed_revision)
        failed = bool(status and status.phase is ExperimentPhase.FAILED)
        return (
            experiment.spec.domain_ref == domain
            and experiment.metadata.deletion_timestamp is None
            and (deployed or not failed)
        )

    def rank(experiment: Experiment) -> tuple[bool, str, str]:
        status = experiment.status
        deployed = bool(status and status.deployed_revision)
        meta = experiment.metadata
        return (not deployed, meta.creation_timestamp or "", meta.name)

    return min(filter(competes, experiments), key=rank, default=None)


@dataclass(frozen=True)
class Revision:
    id: str
    files: dict[str, bytes]
    """Paths relative to the revision folder."""


def build_revision(experiment: Experiment, serving: Serving, template: TemplateSpec) -> Revision:
    """The revision of ``experiment`` rendered from the template version ``template``."""
    spec = experiment.spec
    files: dict[str, bytes] = {}
    for name, rendered in render_experiment(spec, template).items():
        for path, data in rendered.files.items():
            files[f"variants/{name}/{path}"] = data
        if rendered.nginx_conf:
            files[f"nginx/{name}.conf"] = rendered.nginx_conf.encode()
    goal = goal_for(spec, template)
    manifest: dict[str, Any] = {
        "schema": 1,
        "name": experiment.metadata.name,
        "uid": experiment.metadata.uid,
        "type": spec.type.value,
        "variants": [{"name": v.name, "weight": v.weight} for v in spec.variants],
        "goalUrl": goal.redirect_url,
        "serving": {"mode": serving.mode, "winner": serving.winner},
    }
    if goal.event == "latency":
        manifest["performance"] = {
            "probePaths": list(goal.probe_paths),
            "probeMode": goal.probe_mode or "cold",
        }
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    for path in sorted(files):
        digest.update(f"\0{path}\0{len(files[path])}\0".encode())
        digest.update(files[path])
    revision = "r-" + digest.hexdigest()[:20]
    manifest["revision"] = revision
    files["experiment.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return Revision(revision, files)
