"""Bad input never hangs silently (issue 10): every child the apiserver refuses, and every spec the
CRD lets through but that cannot run, ends in a status that names its cause, on the real control
plane. A refusal that cannot heal fails the job at once; one that can is retried and shown."""

from __future__ import annotations

import copy

import pytest
from kubernetes import client

from .helpers import job_manifest, wait_for


def trainer(**extra) -> dict:
    return {"name": "trainer", "image": "trainyard/trainer:test", "command": ["trainyard-launch", "train.py"], **extra}


def with_template(name: str, workers: int = 2, template: dict | None = None, **spec) -> dict:
    body = job_manifest(name, workers=workers, **spec)
    if template is not None:
        body["spec"]["template"] = template
    return body


def failed(kube, ns, name, timeout: float = 60) -> dict:
    status = kube.wait_phase(ns, name, "Failed", timeout)
    return {**status, "reason": kube.condition(ns, name, "Failed")["reason"]}


CHECKPOINT = {"size": "1Gi", "accessModes": ["ReadWriteOnce"]}


# What the CRD schema can already see (a command given as a string, ...) is refused at admission:
# tests/bad_inputs.py. These rows are what only the PodSpec check at creation finds.
@pytest.mark.parametrize(("case", "template", "spec", "reason", "words"), [
    ("image with a trailing space", {"spec": {"containers": [trainer(image="trainyard/trainer:test ")]}}, {},
     "InvalidPodTemplate", ["pod", "image", "whitespace"]),
    ("a volume named like the checkpoint volume",
     {"spec": {"containers": [trainer()], "volumes": [{"name": "trainyard-checkpoints", "emptyDir": {}}]}},
     {"checkpoint": CHECKPOINT}, "InvalidPodTemplate", ["volumes", "trainyard-checkpoints"]),
    ("a mount at the checkpoint path",
     {"spec": {"containers": [trainer(volumeMounts=[{"name": "x", "mountPath": "/checkpoints"}])],
               "volumes": [{"name": "x", "emptyDir": {}}]}},
     {"checkpoint": CHECKPOINT}, "InvalidPodTemplate", ["mountPath", "/checkpoints"]),
    ("a label value with a space", {"metadata": {"labels": {"team": "ml ops"}}, "spec": {"containers": [trainer()]}},
     {}, "InvalidPodTemplate", ["labels", "ml ops"]),
    ("a container name that is not a DNS label",
     {"spec": {"containers": [trainer(), {"name": "Side_Car", "image": "busybox"}]}}, {},
     "InvalidPodTemplate", ["Side_Car"]),
    ("cpu: lots", {"spec": {"containers": [trainer(resources={"requests": {"cpu": "lots"}})]}}, {},
     "InvalidPodTemplate", ["quantities must match"]),
    ("template labels as a list", {"metadata": {"labels": ["a", "b"]}, "spec": {"containers": [trainer()]}}, {},
     "InvalidPodTemplate", ["pod template cannot be used"]),
    ("a misspelt PodSpec field", {"spec": {"containers": [trainer()], "nodeSelecter": {"a": "b"}}}, {},
     "InvalidPodTemplate", ["nodeSelecter"]),
    ("a misspelt container field", {"spec": {"containers": [trainer(resource={"limits": {"cpu": "1"}})]}}, {},
     "InvalidPodTemplate", ["resource"]),
    ("a claim the apiserver refuses", None,
     {"checkpoint": {"size": "1Gi", "accessModes": ["ReadWriteOncePod", "ReadWriteMany"]}},
     "InvalidCheckpointClaim", ["claim", "-checkpoints", "ReadWriteOncePod"]),
])
def test_a_child_that_can_never_be_created_fails_the_job_at_once_naming_its_field(kube, ns, operator, case, template,
                                                                                  spec, reason, words):
    kube.create_job(ns, with_template("bad", template=template, **spec))
    status = failed(kube, ns, "bad")
    assert status["reason"] == reason, status
    for w in words:
        assert w in status["message"], (w, status["message"])
    assert "the apiserver refused" in status["message"] or "cannot be used" in status["message"]
    # events are posted once the status is written: wait for it, then it is there once, not once a second
    wait_for(lambda: reason in [r for r, _ in kube.events(ns, "bad")], 10, f"the {reason} event")
    warnings = [r for r, _ in kube.events(ns, "bad")]
    assert warnings.count(reason) == 1
    assert kube.condition(ns, "bad", "Created") is None or kube.condition(ns, "bad", "Created")["status"] != "True"


def test_valid_pod_specs_reach_the_apiserver_as_written(kube, ns, operator):
    """Numbers where Kubernetes takes quantities (cpu: 1, memory in bytes, an extended resource)."""
    resources = {"requests": {"cpu": 1, "memory": 1073741824}, "limits": {"cpu": 2, "example.com/widget": 0}}
    kube.create_job(ns, with_template("asis", template={"spec": {"containers": [trainer(resources=resources)]}}))
    kube.wait_phase(ns, "asis", "Running")
    pod = kube.core.read_namespaced_pod("asis-0-0", ns)
    trainer_c = next(c for c in pod.spec.containers if c.name == "trainer")
    # as written (quantities keep their form), the extended resource's request defaulted from its limit
    assert trainer_c.resources.requests == {"cpu": "1", "memory": "1073741824", "example.com/widget": "0"}
    assert kube.condition(ns, "asis", "Created")["status"] == "True"


def test_a_quota_short_of_the_gang_is_shown_retried_and_fails_at_the_startup_deadline(kube, ns, operator):
    kube.core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="pods"), spec=client.V1ResourceQuotaSpec(hard={"pods": "4"})))
    wait_for(lambda: (kube.core.read_namespaced_resource_quota("pods", ns).status.hard or {}).get("pods") == "4",
             30, "the quota to be enforced")
    kube.create_job(ns, job_manifest("quota", workers=10, runPolicy={"startupDeadlineSeconds": 20}))
    created = wait_for(lambda: (c := kube.condition(ns, "quota", "Created")) and c["status"] == "False" and c, 30,
                       "Created=False")
    assert created["reason"] == "QuotaExceeded"
    assert "exceeded quota" in created["message"] and "6 worker(s) not created, retrying" in created["message"]
    status = kube.status(ns, "quota")
    assert status["phase"] == "Pending" and status["message"] == created["message"]
    assert len(kube.pods(ns, "quota")) == 4
    final = failed(kube, ns, "quota", 60)
    assert final["reason"] == "QuotaExceeded" and "startupDeadlineSeconds=20" in final["message"]
    # when it was first refused, and when the job failed (events are posted after the status write)
    events = wait_for(lambda: (e := [r for r, _ in kube.events(ns, "quota")]).count("QuotaExceeded") >= 2 and e,
                      10, "the failure's event")
    assert events.count("QuotaExceeded") == 2


def test_a_missing_priority_class_is_retried_and_heals_when_it_appears(kube, ns, operator):
    kube.create_job(ns, job_manifest("prio", workers=2, runPolicy={"priorityClassName": f"{ns}-high",
                                                                  "startupDeadlineSeconds": 120}))
    created = wait_for(lambda: (c := kube.condition(ns, "prio", "Created")) and c["status"] == "False" and c, 30,
                       "Created=False")
    assert created["reason"] == "CreateRefused" and f"{ns}-high" in created["message"]
    scheduling = client.SchedulingV1Api(kube.api_client)
    scheduling.create_priority_class(client.V1PriorityClass(metadata=client.V1ObjectMeta(name=f"{ns}-high"),
                                                            value=1000))
    try:
        status = kube.wait_phase(ns, "prio", "Running", 90)
        assert (status["restarts"], status["disruptions"], status["attempt"]) == (0, 0, 0)
        assert kube.condition(ns, "prio", "Created")["status"] == "True"
    finally:
        scheduling.delete_priority_class(f"{ns}-high")


def test_a_missing_service_account_is_named(kube, ns, operator):
    template = {"spec": {"serviceAccountName": "nobody", "containers": [trainer()]}}
    kube.create_job(ns, with_template("nosa", template=template, runPolicy={"startupDeadlineSeconds": 10}))
    created = wait_for(lambda: (c := kube.condition(ns, "nosa", "Created")) and c["status"] == "False" and c, 30,
                       "Created=False")
    assert "nobody" in created["message"]
    assert failed(kube, ns, "nosa", 60)["reason"] == "CreateRefused"


def test_a_scheduler_nobody_runs_still_fails_at_the_startup_deadline(kube, ns, operator):
    kube.create_job(ns, job_manifest("nosched", workers=2, runPolicy={"schedulerName": "nobody-schedules-this",
                                                                     "startupDeadlineSeconds": 5}))
    status = failed(kube, ns, "nosched", 60)
    assert status["reason"] == "StartupDeadlineExceeded"
    assert "is still Pending after spec.runPolicy.startupDeadlineSeconds=5" in status["message"]


def test_a_node_name_that_does_not_exist_fails_instead_of_looping(kube, ns, operator):
    template = {"spec": {"nodeName": "no-such-node", "containers": [trainer()]}}
    kube.create_job(ns, with_template("pinned", template=template))
    status = failed(kube, ns, "pinned", 60)
    assert status["reason"] == "NodeNotFound" and "no-such-node" in status["message"]
    assert status["disruptions"] == 0


def test_a_foreign_object_with_the_jobs_pod_name_is_named(kube, ns, operator):
    pod = copy.deepcopy({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "taken-0-1"},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    kube.core.create_namespaced_pod(ns, pod)
    kube.create_job(ns, job_manifest("taken", workers=2, runPolicy={"startupDeadlineSeconds": 10}))
    created = wait_for(lambda: (c := kube.condition(ns, "taken", "Created")) and c["status"] == "False" and c, 30,
                       "Created=False")
    assert "taken-0-1 already exists and does not belong to this job" in created["message"]
    kube.core.delete_namespaced_pod("taken-0-1", ns, grace_period_seconds=0)
    status = kube.wait_phase(ns, "taken", "Running", 90)
    assert status["attempt"] == 0


def test_a_refused_progress_child_is_a_warning_event_and_the_job_still_runs(kube, ns, operator):
    """Someone else's RoleBinding holds the progress name: the job runs, and `kubectl describe` says why
    it reports no progress."""
    rbac = client.RbacAuthorizationV1Api(kube.api_client)
    rbac.create_namespaced_role_binding(ns, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "nobind-progress"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]})
    kube.create_job(ns, job_manifest("nobind", workers=2))
    kube.wait_phase(ns, "nobind", "Running", 90)
    warning = wait_for(lambda: next((m for r, m in kube.events(ns, "nobind") if r == "ProgressReportingUnavailable"),
                                    None), 30, "the ProgressReportingUnavailable event")
    assert "RoleBinding nobind-progress" in warning and "does not belong to this job" in warning
    assert "Lease nobind-progress" not in warning and "Role nobind-progress:" not in warning

    # The name is freed and the operator restarts: the next gang it starts makes the binding, as the
    # event promised, although the process that saw the refusal is gone.
    rbac.delete_namespaced_role_binding("nobind-progress", ns)
    operator.stop()
    operator.start()
    kube.finish_pod(ns, "nobind-0-1", 1)
    uid = kube.job(ns, "nobind")["metadata"]["uid"]

    def ours():
        try:
            binding = rbac.read_namespaced_role_binding("nobind-progress", ns)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise
        return [o.uid for o in binding.metadata.owner_references or []] == [uid] and binding

    binding = wait_for(ours, 60, "the job's own RoleBinding, made at the gang start after the restart")
    assert binding.role_ref.name == "nobind-progress" and kube.status(ns, "nobind")["rendezvousAttempt"] == 1
