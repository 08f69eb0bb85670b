"""The CRD on a real apiserver: schema, CEL rules (one test each), subresources, explain."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from .helpers import job_manifest


def rejected(kube, ns, body) -> str:
    with pytest.raises(ApiException) as e:
        kube.create_job(ns, body)
    assert e.value.status == 422, e.value.body
    return json.loads(e.value.body)["message"]


TRAINER = {"name": "trainer", "image": "x"}


@pytest.mark.parametrize(("name", "spec", "field", "fragment"), [
    ("min-gt-max", {"elastic": {"minWorkers": 3, "maxWorkers": 2}, "workers": 2},
     "spec.elastic.minWorkers", "must not exceed spec.elastic.maxWorkers"),
    ("out-of-bounds", {"elastic": {"minWorkers": 1, "maxWorkers": 2}, "workers": 5},
     "spec.workers", "must lie within"),
    ("reserved-pet", {"template": {"spec": {"containers": [{**TRAINER, "env": [{"name": "PET_NNODES", "value": "9"}]}]}}},
     "spec.template.spec.containers", "must not set PET_*"),
    ("reserved-master", {"template": {"spec": {"containers": [
        {"name": "side", "image": "x", "env": [{"name": "MASTER_ADDR", "value": "x"}]}, TRAINER]}}},
     "spec.template.spec.containers", "must not set PET_*"),
    ("no-trainer", {"template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}},
     "spec.template.spec.containers", "must include a container named 'trainer'"),
    ("worker-scope-fixed", {"failurePolicy": {"restartScope": "Worker"}},
     "spec.failurePolicy.restartScope", "needs spec.elastic"),
    ("claim-and-size", {"checkpoint": {"claimName": "c", "size": "1Gi"}},
     "spec.checkpoint.claimName", "do not also set size"),
    ("no-claim-no-size", {"checkpoint": {"mountPath": "/c"}}, "spec.checkpoint.size", "needs either claimName"),
    ("retain-existing", {"checkpoint": {"claimName": "c", "retain": True}}, "spec.checkpoint.retain", "never deleted"),
])
def test_cel_rule_rejects_with_the_field_named(kube, ns, name, spec, field, fragment):
    body = job_manifest(name)
    body["spec"].update(spec)
    message = rejected(kube, ns, body)
    assert field in message and fragment in message, message


def test_name_too_long_for_hostnames(kube, ns):
    message = rejected(kube, ns, job_manifest("a" * 49))
    assert "metadata.name must be at most 48 characters" in message, message


def test_schema_rejects_types_and_ranges_with_the_field(kube, ns):
    body = job_manifest("bad-types")
    body["spec"]["failurePolicy"] = {"restartPolicy": "Sometimes", "backoffLimit": -1}
    message = rejected(kube, ns, body)
    assert "spec.failurePolicy.restartPolicy" in message and "spec.failurePolicy.backoffLimit" in message, message


def test_template_is_immutable_while_running_but_not_while_suspended(kube, ns, operator):
    kube.create_job(ns, job_manifest("immut"))
    kube.wait_phase(ns, "immut", "Running")
    with pytest.raises(ApiException) as e:
        kube.patch_job(ns, "immut", {"spec": {"template": {"spec": {"containers": [{**TRAINER, "image": "y"}]}}}})
    assert e.value.status == 422 and "spec.template cannot change while the job is running" in e.value.body
    kube.patch_job(ns, "immut", {"spec": {"runPolicy": {"suspend": True}}})
    kube.wait_phase(ns, "immut", "Suspended")
    kube.patch_job(ns, "immut", {"spec": {"template": {"spec": {"containers": [{**TRAINER, "image": "y"}]}}}})


def test_defaults_are_applied_and_unknown_fields_pruned(kube, ns):
    body = job_manifest("defaults")
    body["spec"]["bogus"] = 1
    obj = kube.create_job(ns, body)
    assert "bogus" not in obj["spec"]
    assert obj["spec"]["failurePolicy"] == {"restartPolicy": "OnFailure", "restartScope": "Gang", "backoffLimit": 3,
                                            "backoffSeconds": 10, "maxBackoffSeconds": 300, "inPlaceRestarts": 0}
    assert obj["spec"]["rendezvous"] == {"port": 29400, "joinTimeoutSeconds": 600}


def test_kubectl_explain_shows_the_model_descriptions(installed):
    out = " ".join(installed.kubectl_run("explain", "dtj.spec.failurePolicy.restartScope").stdout.split())
    assert "Gang: any failure replaces every worker with a new rendezvous" in out
    out = " ".join(installed.kubectl_run("explain", "distributedtrainingjob.status.disruptions").stdout.split())
    assert "never counted" in out


def test_status_is_a_subresource(kube, ns):
    kube.create_job(ns, job_manifest("sub", runPolicy={"suspend": True}))
    kube.patch_job(ns, "sub", {"status": {"phase": "Succeeded"}})  # the main resource ignores status
    assert (kube.job(ns, "sub").get("status") or {}).get("phase") != "Succeeded"
