"""The API models, the CRD generated from them, and its checks evaluated in Python.

The bad inputs come from tests/bad_inputs.py, the table the cluster tier sends to the real
apiserver and the runtime tier to `trainyard run`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from trainyard.api import DistributedTrainingJob, crd, semantic_errors
from trainyard.api.admission import admission_errors, rules
from trainyard.api.errors import InvalidSpec
from trainyard.api.spec import MAX_DURATION_SECONDS
from trainyard.api.validation import checked_job, with_defaults
from trainyard.engine import Launch, decide
from trainyard.engine.workers import State
from trainyard.kube.manifests import worker_pod

from ..bad_inputs import BAD_INPUTS, RUNNING_CHANGES, Bad, Change, manifest, merge
from .conftest import T0, at, make_job, then, wk

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"$ref", "anyOf", "oneOf", "allOf", "title", "const", "uniqueItems", "exclusiveMinimum",
             "exclusiveMaximum", "$defs"}


def schema_nodes(node: dict[str, Any], path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema of the tree: the node, each property's, the items'. Not the `properties` maps
    themselves (their keys are field names, which may be anything) nor the rule lists."""
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


def schema():
    return crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_checked_in_crd_is_current():
    assert (ROOT / "crds" / "trainyard.dev_distributedtrainingjobs.yaml").read_text() == crd.render()
    assert (ROOT / "charts" / "trainyard" / "crds" / "trainyard.dev_distributedtrainingjobs.yaml").read_text() == \
        crd.render()


def test_schema_is_structural():
    nodes = list(schema_nodes(schema()))
    assert len(nodes) > 100  # the walk reaches the whole tree, the pod template included
    for path, node in nodes:
        assert not (FORBIDDEN & node.keys()), f"{path} has {FORBIDDEN & node.keys()}"
        assert "type" in node, f"{path} has no type"
        if "properties" in node:
            assert node["type"] == "object" and "additionalProperties" not in node, path
        if "items" in node:
            assert node["type"] == "array", path


def test_every_spec_and_status_field_is_described():
    s = schema()
    missing = [path for top in ("spec", "status") for path, node in schema_nodes(s["properties"][top], top)
               if path != top and not path.endswith("[]") and "description" not in node
               and not path.startswith("spec.template.")]
    assert missing == []


def test_every_rule_names_its_field_and_says_why():
    found = rules()
    assert len(found) >= 20
    for r in found:
        assert r.field_path.startswith("."), f"{r.schema_path}: {r.rule} has no fieldPath"
        assert len(r.message) > 30, f"{r.schema_path}: {r.rule} has no real message"


def test_subresources_and_columns():
    version = crd.crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}, "scale": {"specReplicasPath": ".spec.workers",
                                                               "statusReplicasPath": ".status.workers.active",
                                                               "labelSelectorPath": ".status.selector"}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == \
        ["Phase", "Ready", "Desired", "Restarts", "Step", "%", "ETA", "Age"]
    wide = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"] if c.get("priority") == 1}
    assert wide == {"Attempt": ".status.attempt", "Disruptions": ".status.disruptions", "Loss": ".status.progress.loss",
                    "Last-Ckpt": ".status.progress.lastCheckpointStep", "Message": ".status.message"}


def test_examples_parse_and_pass_the_crds_checks():
    for f in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "DistributedTrainingJob":
                job = checked_job(doc, str(f))
                assert semantic_errors(job) == [], f


# -- the shared table, evaluated in Python


def refusal(bad: Bad) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as e:
        checked_job(bad.body(), "job.yaml")
    return e.value


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.id)
def test_every_bad_input_is_refused_naming_the_field(bad):
    message = str(refusal(bad))
    assert message.startswith("job.yaml: ") and f"{bad.field}: " in message and bad.message in message, message
    assert bad.field in refusal(bad).fields


def running(change: Change, phase: str | None = "") -> tuple[dict, dict]:
    old = with_defaults(change.body())
    if phase is not None:
        old["status"] = {"phase": phase or change.phase}
    return with_defaults(merge(old, change.patch)), old


@pytest.mark.parametrize("change", RUNNING_CHANGES, ids=lambda c: c.id)
def test_every_change_of_a_running_job_is_refused_and_taken_once_suspended(change):
    new, old = running(change)
    errors = admission_errors(new, old)
    assert len(errors) == 1 and errors[0].startswith(f"{change.field}: ") and change.message in errors[0], errors
    assert admission_errors(*running(change, "Suspended")) == []
    assert admission_errors(*running(change, None)) == []  # not started yet: nothing to keep
    finished = admission_errors(*running(change, "Succeeded"))
    assert len(finished) == 1 and "it has finished" in finished[0], finished
    assert admission_errors(old, old) == []  # a status update leaves the spec alone


def test_every_cel_rule_of_the_crd_is_evaluated_in_python_and_refuses_some_row():
    """One source: the rules the apiserver enforces are the ones evaluated locally. Each rule of
    the generated CRD must refuse at least one row of the shared table, evaluated by cel-python."""
    failed: set[str] = set()
    for bad in BAD_INPUTS:
        admission_errors(with_defaults(bad.body()), None, failed)
    for change in RUNNING_CHANGES:
        admission_errors(*running(change), failed)
    assert sorted({r.rule for r in rules()} - failed) == []


def test_the_engines_recheck_is_the_same_check():
    job = make_job({"workers": 5, "elastic": {"minWorkers": 1, "maxWorkers": 3}})
    assert semantic_errors(job) == [
        "spec.workers: Invalid value: spec.workers must lie within spec.elastic.minWorkers and "
        "spec.elastic.maxWorkers (1 to 3); 5 was asked for"]
    assert semantic_errors(make_job({}, name="x" * 49)) == [
        "metadata.name: Invalid value: metadata.name must be at most 48 characters, not 49: worker hostnames are "
        "<name>-<attempt>-<index> and must fit in 63"]
    assert semantic_errors(make_job({})) == []


def test_defaults_are_applied_before_the_rules_as_the_apiserver_does():
    obj = with_defaults(manifest())
    assert obj["spec"]["failurePolicy"] == {"restartPolicy": "OnFailure", "restartScope": "Gang", "backoffLimit": 3,
                                            "backoffSeconds": 10, "maxBackoffSeconds": 300, "inPlaceRestarts": 0,
                                            "restartMode": "Cold"}
    assert obj["spec"]["rendezvous"] == {"port": 29400, "joinTimeoutSeconds": 600}


def test_rules_do_not_run_on_an_object_with_schema_errors():
    """As the apiserver: a rule may assume the schema's types, so none runs until those hold."""
    body = merge(manifest(), {"spec": {"workers": "2", "failurePolicy": {"restartScope": "Worker"}}})
    assert admission_errors(with_defaults(body)) == [
        'spec.workers: Invalid value: "string": spec.workers in body must be of type integer: "string"']


def test_pydantic_rejects_wrong_types_with_the_field():
    with pytest.raises(ValidationError) as e:
        make_job({"failurePolicy": {"backoffLimit": -1}})
    assert e.value.errors()[0]["loc"] == ("spec", "failurePolicy", "backoffLimit")


def test_unknown_fields_are_refused_locally():
    with pytest.raises(InvalidSpec, match="spec.bogus: Extra inputs are not permitted"):
        checked_job(merge(manifest(), {"spec": {"bogus": 1}}))
    assert isinstance(checked_job(manifest()), DistributedTrainingJob)


def test_the_bounds_keep_the_engine_and_the_pods_in_range():
    """At every bound at once the engine decides without overflow (1e12 s overflowed datetime on
    every reconcile) and the liveness probe's initialDelaySeconds fits its int32."""
    longest = {"activeDeadlineSeconds": MAX_DURATION_SECONDS, "ttlSecondsAfterFinished": MAX_DURATION_SECONDS,
               "startupDeadlineSeconds": MAX_DURATION_SECONDS, "progressDeadlineSeconds": MAX_DURATION_SECONDS}
    job = make_job({"runPolicy": longest, "failurePolicy": {"backoffLimit": 10000, "backoffSeconds": 86400,
                                                           "maxBackoffSeconds": 86400}})
    job = then(job, decide(job, [], T0))
    job = then(job, decide(job, [wk(0), wk(1)], at(1)))
    plan = decide(job, [wk(0), wk(1, state=State.FAILED, exit_code=1)], at(2))  # a restart, its backoff
    assert plan.status.restarts == 1
    probe = worker_pod(job, Launch("demo-0-0", 0, 0, 0))["spec"]["containers"][0]["livenessProbe"]
    assert probe["initialDelaySeconds"] <= 2**31 - 1
    assert job.spec.failure_policy.backoff_delay(10000) == 86400.0


def test_each_distinct_node_is_judged_once_and_the_same_for_every_job():
    """The engine re-checks every job of a burst: a node (a container, a spec) identical to one already
    judged costs a lookup, and the verdict still names this job's field."""
    from trainyard.api.admission import _outcome, compile_rules

    assert compile_rules() == len({t for r in rules() for t in (r.rule, r.message_expression) if t})
    bad_env = {"containers": [{"name": "trainer", "image": "i", "env": [{"name": "PET_NNODES", "value": "1"}]}]}
    first = semantic_errors(make_job(spec={"template": {"spec": bad_env}}, name="job-a"))
    hits = _outcome.cache_info().hits
    second = semantic_errors(make_job(spec={"template": {"spec": bad_env}}, name="job-b"))
    assert first == second and len(first) == 1 and first[0].startswith("spec.template.spec.containers[0]")
    assert _outcome.cache_info().hits > hits
    long_name = semantic_errors(make_job(name="x" * 49))  # a root rule reads the name: never another job's verdict
    assert long_name == ["metadata.name: Invalid value: metadata.name must be at most 48 characters, not 49: worker "
                         "hostnames are <name>-<attempt>-<index> and must fit in 63"]
