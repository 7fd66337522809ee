"""The CRD YAML in crds/ is what the models generate, and every sample parses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smart_operator import crdgen
from smart_operator.models import (
    ClusterExperimentTemplate,
    Customer,
    Domain,
    Experiment,
    ExperimentTemplate,
)
from smart_operator.templates import check_template
from smart_operator.templates.catalog import main as catalog_main

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "manifests" / "catalog"
SAMPLES = {
    "Customer": Customer,
    "Domain": Domain,
    "Experiment": Experiment,
    "ExperimentTemplate": ExperimentTemplate,
    "ClusterExperimentTemplate": ClusterExperimentTemplate,
}


def test_committed_crds_match_the_models() -> None:
    stale = [
        name
        for name, content in crdgen.files().items()
        if (ROOT / "crds" / name).read_text() != content
    ]
    assert not stale, f"crds/ is stale for {stale}: run `make crds` and commit the result"


@pytest.mark.parametrize("sample", sorted((ROOT / "crds" / "samples").glob("*.yaml")), ids=str)
def test_samples_parse_with_the_models(sample: Path) -> None:
    obj = yaml.safe_load(sample.read_text())
    model = SAMPLES[obj["kind"]].model_validate(obj)
    assert model.metadata.name == obj["metadata"]["name"]


def catalogue() -> list[Path]:
    return sorted(p for p in CATALOG.glob("*.yaml") if p.name != "kustomization.yaml")


def test_every_kind_has_a_sample() -> None:
    """The catalogue's objects are the ClusterExperimentTemplate samples."""
    kinds = {
        yaml.safe_load(p.read_text())["kind"]
        for p in [*(ROOT / "crds" / "samples").glob("*.yaml"), *catalogue()]
    }
    assert kinds == set(SAMPLES)


def test_committed_catalogue_matches_the_template_sources() -> None:
    assert catalog_main(["--check", str(CATALOG)]) == 0, "run `make crds` and commit the result"


@pytest.mark.parametrize(
    "path",
    [*catalogue(), ROOT / "crds" / "samples" / "experimenttemplate.yaml"],
    ids=lambda p: p.name,
)
def test_template_objects_are_valid_templates(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    template = SAMPLES[obj["kind"]].model_validate(obj)
    assert isinstance(template, ClusterExperimentTemplate | ExperimentTemplate)
    assert check_template(template.spec) == []


def test_schemas_are_structural() -> None:
    """No construct the API server refuses in a structural schema survives generation."""

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs"):
                assert banned not in node, f"{banned} at {path}"
            if "properties" in node:
                assert node.get("type") == "object", f"untyped object at {path}"
            for key, value in node.items():
                if key == "properties":  # field names (a template has a `title` field)
                    for name, sub in value.items():
                        walk(sub, f"{path}.properties.{name}")
                else:
                    walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]")

    for model in crdgen.KINDS:
        walk(crdgen.openapi_schema(model), model.KIND.kind)
