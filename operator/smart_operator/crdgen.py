"""Generates the CRD YAML in ``crds/`` from the pydantic resource models.

The models are the single source: this module turns their JSON schema into a
structural ``openAPIV3Schema`` (inlined references, no ``anyOf`` for optional
fields, OpenAPI 3.0 bounds) and adds what a CRD declares besides the schema. Run
``python -m smart_operator.crdgen [--check] [DIR]``; a test keeps the committed
files in sync. Pure: it writes files only from ``main``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from smart_operator.models import (
    ClusterExperimentTemplate,
    Customer,
    Domain,
    Experiment,
    ExperimentTemplate,
)
from smart_operator.models.common import GROUP, VERSION, Resource

KINDS: tuple[type[Resource], ...] = (
    Customer,
    Domain,
    Experiment,
    ClusterExperimentTemplate,
    ExperimentTemplate,
)
_DROPPED_KEYS = {"title", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Rewrite one pydantic JSON-schema node into its structural OpenAPI form."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        # Optional[X] is "X or null": the field is simply not required.
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {options} in a structural schema")
        return _structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "default" and isinstance(value, dict):
            # An empty object lets the API server fill in each property's own default.
            out[key] = {}
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _structural(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _part_schema(model: type[Resource], part: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    node = schema["properties"][part]
    return dict(_structural(node, defs))


def openapi_schema(model: type[Resource]) -> dict[str, Any]:
    """The full ``openAPIV3Schema`` of one kind."""
    spec = _part_schema(model, "spec")
    rules = model.KIND.extra.get("spec_validations")
    if rules:
        spec["x-kubernetes-validations"] = rules
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
    }
    if _has_status(model):
        properties["status"] = _part_schema(model, "status")
    root: dict[str, Any] = {}
    if model.KIND.extra.get("validations"):
        root["x-kubernetes-validations"] = model.KIND.extra["validations"]
    return {
        **root,
        "type": "object",
        "required": ["spec"],
        "properties": properties,
    }


def _has_status(model: type[Resource]) -> bool:
    """Whether the kind has a status (written through the status subresource)."""
    return "status" in model.model_fields


def crd(model: type[Resource]) -> dict[str, Any]:
    """The whole CustomResourceDefinition of one kind."""
    info = model.KIND
    doc = (model.__doc__ or "").strip()
    schema = openapi_schema(model)
    schema["description"] = doc
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/part-of": "smartserver"},
        },
        "spec": {
            "group": GROUP,
            "scope": info.scope,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.kind.lower(),
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    **({"subresources": {"status": {}}} if _has_status(model) else {}),
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            **({"priority": c.priority} if c.priority else {}),
                            **({"description": c.description} if c.description else {}),
                        }
                        for c in info.columns
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render(model: type[Resource]) -> str:
    header = (
        "# Generated from the pydantic models by `python -m smart_operator.crdgen`.\n"
        "# Do not edit by hand: change the models and regenerate (`make crds`).\n"
    )
    return header + yaml.safe_dump(crd(model), sort_keys=False, width=100)


def files() -> dict[str, str]:
    """File name to content, for every kind."""
    return {f"{m.KIND.plural}.yaml": render(m) for m in KINDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", nargs="?", default="crds", type=Path)
    parser.add_argument(
        "--check", action="store_true", help="fail if the files differ instead of writing"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, content in files().items():
        path: Path = args.directory / name
        if path.exists() and path.read_text() == content:
            continue
        stale.append(str(path))
        if not args.check:
            path.write_text(content)
    if args.check and stale:
        print("stale CRD YAML (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    for path_name in stale:
        print(f"wrote {path_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
