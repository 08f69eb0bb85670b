"""The API models and the CRD generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from trainyard.api import DistributedTrainingJob, crd, semantic_errors

from .conftest import make_job

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"$ref", "anyOf", "oneOf", "allOf", "title", "const", "uniqueItems", "exclusiveMinimum",
             "exclusiveMaximum", "$defs"}


def walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def schema():
    return crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_checked_in_crd_is_current():
    assert (ROOT / "crds" / "trainyard.dev_distributedtrainingjobs.yaml").read_text() == crd.render()


def test_schema_is_structural():
    for path, node in walk(schema()):
        assert not (FORBIDDEN & node.keys()), f"{path} has {FORBIDDEN & node.keys()}"
        if "properties" in node:
            assert "additionalProperties" not in node, path
        if path.endswith(".properties") or path.endswith("x-kubernetes-validations") or ".properties." in path[-1:]:
            continue


def test_every_spec_and_status_field_is_described():
    s = schema()
    missing = []
    for top in ("spec", "status"):
        for path, node in walk(s["properties"][top], top):
            for name, sub in (node.get("properties") or {}).items():
                if "description" not in sub and not path.startswith("spec.properties.template"):
                    missing.append(f"{path}.{name}")
    assert missing == []


def test_every_typed_node_has_a_type():
    for path, node in walk(schema()):
        if path.endswith(".properties") or "x-kubernetes-validations" in path.split(".")[-1]:
            continue
        if any(k in node for k in ("description", "properties", "items")) and "rule" not in node:
            assert "type" in node, path


def test_subresources_and_columns():
    version = crd.crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}, "scale": {"specReplicasPath": ".spec.workers",
                                                               "statusReplicasPath": ".status.workers.active"}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == \
        ["Phase", "Ready", "Desired", "Restarts", "Age"]


def test_examples_parse_and_pass_the_semantic_rules():
    for f in sorted((ROOT / "examples").glob("*.yaml")):
        job = DistributedTrainingJob.from_dict(yaml.safe_load(f.read_text()))
        assert semantic_errors(job) == [], f


@pytest.mark.parametrize(("spec", "meta", "fragment"), [
    ({"elastic": {"minWorkers": 3, "maxWorkers": 2}}, {}, "spec.elastic.minWorkers must not exceed"),
    ({"workers": 5, "elastic": {"minWorkers": 1, "maxWorkers": 2}}, {}, "spec.workers must lie within"),
    ({"workers": None}, {}, "spec.workers is required"),
    ({"failurePolicy": {"restartScope": "Worker"}}, {}, "spec.failurePolicy.restartScope Worker needs spec.elastic"),
    ({"template": {"spec": {"containers": [{"name": "main"}]}}}, {}, "named 'trainer'"),
    ({"template": {"spec": {"containers": [{"name": "trainer", "env": [{"name": "PET_NNODES", "value": "1"}]}]}}},
     {}, "env[PET_NNODES] is reserved"),
    ({"template": {"spec": {"containers": [{"name": "trainer", "env": [{"name": "WORLD_SIZE", "value": "1"}]}]}}},
     {}, "env[WORLD_SIZE] is reserved"),
    ({}, {"name": "x" * 49}, "metadata.name must be at most 48 characters"),
])
def test_semantic_errors_name_the_field(spec, meta, fragment):
    errors = semantic_errors(make_job(spec, **meta))
    assert len(errors) == 1 and fragment in errors[0], errors


def test_pydantic_rejects_wrong_types_with_the_field():
    with pytest.raises(ValidationError) as e:
        make_job({"failurePolicy": {"backoffLimit": -1}})
    assert e.value.errors()[0]["loc"] == ("spec", "failurePolicy", "backoffLimit")
