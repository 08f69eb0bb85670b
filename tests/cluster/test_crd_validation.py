"""The CRD on a real apiserver: the shared table of bad inputs (every CEL rule refuses one), the
changes refused while a job runs, the scale subresource, defaults, explain."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trainyard import api

from ..bad_inputs import BAD_INPUTS, RUNNING_CHANGES, Change, merge
from .helpers import job_manifest, wait_for


def rejected(kube, ns, body) -> str:
    with pytest.raises(ApiException) as e:
        kube.create_job(ns, body)
    assert e.value.status == 422, e.value.body
    return json.loads(e.value.body)["message"]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.id)
def test_the_apiserver_refuses_each_bad_input_naming_the_field(kube, ns, bad):
    """The same table `trainyard run` is held to (tests/runtime/test_bad_inputs.py)."""
    message = rejected(kube, ns, bad.body())
    assert f"{bad.field}: " in message and bad.message in message, message


def change(kube, installed, ns: str, name: str, c: Change) -> None:
    if c.scale is None:
        kube.patch_job(ns, name, c.patch)
        return
    out = installed.kubectl_run("scale", f"dtj/{name}", "-n", ns, f"--replicas={c.scale}", check=False)
    if out.returncode != 0:
        raise AssertionError(out.stderr)


@pytest.mark.parametrize("c", RUNNING_CHANGES, ids=lambda c: c.id)
def test_a_running_job_refuses_the_change_until_it_is_suspended(kube, ns, operator, installed, c):
    kube.create_job(ns, c.body("running"))
    kube.wait_phase(ns, "running", c.phase)
    with pytest.raises((ApiException, AssertionError)) as e:
        change(kube, installed, ns, "running", c)
    message = json.loads(e.value.body)["message"] if isinstance(e.value, ApiException) else str(e.value)
    assert f"{c.field}: " in message and c.message in message, message
    kube.patch_job(ns, "running", {"spec": {"runPolicy": {"suspend": True}}})
    kube.wait_phase(ns, "running", "Suspended")
    change(kube, installed, ns, "running", c)  # taken now: the job has no workers
    job = kube.job(ns, "running")
    assert job == merge(job, c.patch if c.scale is None else {"spec": {"workers": c.scale}})


def test_the_scale_subresource_reports_the_workers_selector_for_an_hpa(kube, ns, operator, installed):
    kube.create_job(ns, job_manifest("hpa", workers=2, elastic={"minWorkers": 1, "maxWorkers": 4}))
    kube.wait_phase(ns, "hpa", "Running")
    scale = kube.custom.get_namespaced_custom_object_scale(api.GROUP, api.VERSION, ns, api.PLURAL, "hpa")
    assert scale["status"] == {"replicas": 2, "selector": "trainyard.dev/job-name=hpa"}
    pods = kube.core.list_namespaced_pod(ns, label_selector=scale["status"]["selector"]).items
    assert sorted(p.metadata.name for p in pods) == ["hpa-0-0", "hpa-0-1"]
    # The real HPA controller reads that selector (no metrics API here, so it cannot go further).
    hpa = client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="hpa"),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(api_version=api.API_VERSION, kind=api.KIND,
                                                                  name="hpa"),
            min_replicas=1, max_replicas=4,
            metrics=[client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
                name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=50)))]))
    autoscaling = client.AutoscalingV2Api(kube.api_client)
    autoscaling.create_namespaced_horizontal_pod_autoscaler(ns, hpa)

    def scaling_active():
        st = autoscaling.read_namespaced_horizontal_pod_autoscaler("hpa", ns).status
        return next((c for c in st.conditions or [] if c.type == "ScalingActive"), None)

    condition = wait_for(scaling_active, 60, "the HPA controller's ScalingActive condition")
    assert condition.reason != "InvalidSelector", condition
    assert "selector" not in (condition.message or "").lower(), condition


def test_defaults_are_applied_and_unknown_fields_pruned(kube, ns):
    body = job_manifest("defaults")
    body["spec"]["bogus"] = 1
    obj = kube.create_job(ns, body)
    assert "bogus" not in obj["spec"]
    assert obj["spec"]["failurePolicy"] == {"restartPolicy": "OnFailure", "restartScope": "Gang", "backoffLimit": 3,
                                            "backoffSeconds": 10, "maxBackoffSeconds": 300, "inPlaceRestarts": 0,
                                            "restartMode": "Cold"}
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
