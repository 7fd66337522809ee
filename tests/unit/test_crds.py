"""The CRD YAML in crds/ is what the models generate, and every sample parses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smart_operator import crdgen
from smart_operator.models import Customer, Domain, Experiment

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {"Customer": Customer, "Domain": Domain, "Experiment": Experiment}


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


def test_every_kind_has_a_sample() -> None:
    kinds = {
        yaml.safe_load(p.read_text())["kind"] for p in (ROOT / "crds" / "samples").glob("*.yaml")
    }
    assert kinds == set(SAMPLES)


def test_schemas_are_structural() -> None:
    """No construct the API server refuses in a structural schema survives generation."""

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs"):
                assert banned not in node, f"{banned} at {path}"
            if "properties" in node:
                assert node.get("type") == "object", f"untyped object at {path}"
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]")

    for model in crdgen.KINDS:
        walk(crdgen.openapi_schema(model), model.KIND.kind)
