"""The built-in templates' sources, and the catalogue objects the chart installs.

The operator renders from ``ClusterExperimentTemplate``/``ExperimentTemplate``
resources (``smart_operator.models.template``), never from these files. They are the
source of the seven built-ins: ``builtin(name)`` reads one into a ``TemplateSpec``, its
Jinja2 files included, and ``python -m smart_operator.templates.catalog`` writes them as
``ClusterExperimentTemplate`` objects into ``manifests/catalog/`` (``make crds``; ``make
chart`` copies them into the chart, and a test keeps all three in sync).

A template folder holds ``meta.yaml`` and its Jinja2 files; ``_shared/`` holds the
layout, the components, the CSS and the value sets that several templates include
(``_shared/values/<set>.yaml``). A built-in's ``files`` are the shared files with its
own over them (its ``components/hero_visual.html.j2`` replaces the shared one). A
template's own ``values`` entry either adds a key (a full spec) or, for a key that a
value set declares, overrides some of its fields (usually just ``default``).
"""

from __future__ import annotations

import argparse
import sys
from enum import StrEnum
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from smart_operator.models.common import API_VERSION
from smart_operator.models.template import TemplateSpec

PACKAGE = "smart_operator.templates"
SHARED = "_shared"
BUILTIN_VERSION = 1
"""The version of the built-ins this release ships; raise it when one changes, so
running experiments keep theirs (the old version stays in the chart until dropped)."""


class TemplateName(StrEnum):
    """The built-in templates."""

    SAAS_LANDING = "saas_landing"
    ECOMMERCE_LANDING = "ecommerce_landing"
    AGENCY_LANDING = "agency_landing"
    NGINX_OPTIMIZATION = "nginx_optimization"
    CACHE_OPTIMIZATION = "cache_optimization"
    CHECKOUT_FLOW = "checkout_flow"
    SIGNUP_FLOW = "signup_flow"


class ValueSetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z_]+$")
    control_only: bool = False


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


def _files(folder: Traversable, prefix: str = "") -> dict[str, str]:
    """Every template file under ``folder`` by relative path, but meta and value sets."""
    found: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        path = prefix + entry.name
        if entry.is_dir():
            if path != "values" and not entry.name.startswith("__"):
                found.update(_files(entry, path + "/"))
        elif entry.name != "meta.yaml" and not entry.name.endswith(".pyc"):
            found[path] = entry.read_text(encoding="utf-8")
    return found


@cache
def builtin(name: TemplateName) -> TemplateSpec:
    """One built-in template, value sets merged, files included, every default checked."""
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
    root = resources.files(PACKAGE)
    files = {**_files(root.joinpath(SHARED)), **_files(root.joinpath(name.value))}
    try:
        return TemplateSpec.model_validate(
            {
                **raw,
                "name": name.value,
                "version": BUILTIN_VERSION,
                "values": merged,
                "files": files,
            }
        )
    except ValueError as exc:
        raise ValueError(f"{name.value}/meta.yaml: {exc}") from exc


def all_builtins() -> tuple[TemplateSpec, ...]:
    """Every built-in template, in the order of ``TemplateName``."""
    return tuple(builtin(name) for name in TemplateName)


def object_name(spec: TemplateSpec) -> str:
    """The object name of one version: ``saas-landing-v1``."""
    return f"{spec.name.replace('_', '-')}-v{spec.version}"


def catalog_object(spec: TemplateSpec) -> dict[str, Any]:
    """The ``ClusterExperimentTemplate`` of one built-in version."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ClusterExperimentTemplate",
        "metadata": {
            "name": object_name(spec),
            # A chart upgrade that drops this version leaves it for the experiments
            # pinned to it; delete it by hand once none is.
            "annotations": {"helm.sh/resource-policy": "keep"},
            "labels": {
                "app.kubernetes.io/part-of": "smartserver",
                "smartserver.ai/template": spec.name,
            },
        },
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_defaults=True),
    }


def catalog_files() -> dict[str, str]:
    """File name to YAML, for ``manifests/catalog/``: each built-in and the kustomization."""
    header = (
        "# Generated from operator/smart_operator/templates/ by "
        "`python -m smart_operator.templates.catalog`.\n"
        "# Do not edit by hand: change the template sources and regenerate (`make crds`).\n"
    )
    out: dict[str, str] = {}
    for spec in all_builtins():
        body = yaml.safe_dump(catalog_object(spec), sort_keys=False, width=100)
        out[f"{object_name(spec)}.yaml"] = header + body
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(out),
    }
    out["kustomization.yaml"] = (
        "# The platform's template catalogue: one ClusterExperimentTemplate per built-in\n"
        "# version. Apply after the CRDs are established.\n"
        + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the built-in catalogue objects")
    parser.add_argument("directory", nargs="?", default="manifests/catalog", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    args = parser.parse_args(argv)
    wanted = catalog_files()
    stale = [
        n
        for n, c in wanted.items()
        if not (args.directory / n).exists() or (args.directory / n).read_text() != c
    ]
    extra = [p.name for p in args.directory.glob("*.yaml") if p.name not in wanted]
    if args.check:
        if stale or extra:
            print(
                f"stale catalogue in {args.directory} (run `make crds`): "
                + ", ".join(stale + extra),
                file=sys.stderr,
            )
            return 1
        return 0
    args.directory.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (args.directory / name).write_text(wanted[name])
        print(f"wrote {args.directory / name}")
    for name in extra:
        (args.directory / name).unlink()
        print(f"removed {args.directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
