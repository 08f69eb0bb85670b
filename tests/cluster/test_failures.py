"""Failures on a real control plane: restarts, budgets, disruptions, stuck pods, operator crashes."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from kubernetes import client, watch

from trainyard import api

from .conftest import REPO
from .helpers import env_of, held_node, job_manifest, wait_for


def reason(kube, ns, name, type_):
    c = kube.condition(ns, name, type_)
    return c and (c["status"], c["reason"])


def live_indices_by_attempt(kube, ns, job) -> Counter:
    pods = kube.pods(ns, job, live_only=True)
    return Counter((p.metadata.labels["trainyard.dev/attempt"], p.metadata.labels["trainyard.dev/worker-index"])
                   for p in pods)


def test_retryable_failure_restarts_the_gang_with_a_new_rendezvous(kube, ns, operator):
    kube.create_job(ns, job_manifest("gang", workers=3))
    kube.wait_phase(ns, "gang", "Running")
    uid = kube.job(ns, "gang")["metadata"]["uid"]
    old_ids = {env_of(p)["PET_RDZV_ID"] for p in kube.pods(ns, "gang", 0)}
    assert old_ids == {f"{uid}-0"}

    kube.finish_pod(ns, "gang-0-1", 143)
    new = wait_for(lambda: kube.running(ns, "gang", 1, 3), 30, "3 running pods of attempt 1")
    status = kube.wait_phase(ns, "gang", "Running")
    assert (status["attempt"], status["restarts"], status["disruptions"]) == (1, 1, 0)
    assert {env_of(p)["PET_RDZV_ID"] for p in new} == {f"{uid}-1"}
    assert {env_of(p)["PET_RDZV_ENDPOINT"] for p in new} == {f"gang-1-0.gang.{ns}.svc.cluster.local.:29400"}
    # the old gang is gone except the failed pod, kept for its logs
    wait_for(lambda: [p.metadata.name for p in kube.pods(ns, "gang", 0)] == ["gang-0-1"], 30, "old gang deleted")
    assert max(live_indices_by_attempt(kube, ns, "gang").values()) == 1
    assert reason(kube, ns, "gang", "Restarting") == ("False", "AllWorkersRunning")
    events = [r for r, _ in kube.events(ns, "gang")]
    assert events == ["AllWorkersRunning", "WorkerFailed", "AllWorkersRunning"]


@pytest.mark.parametrize(("policy", "code", "term_reason", "expected"), [
    ("ExitCode", 1, "Error", "NonRetryableExitCode"),
    ("ExitCode", 137, "OOMKilled", "OOMKilled"),
    ("Never", 143, "Error", "WorkerFailed"),
])
def test_non_retryable_failures_fail_the_job(kube, ns, operator, policy, code, term_reason, expected):
    kube.create_job(ns, job_manifest("nr", workers=2, failurePolicy={"restartPolicy": policy}))
    kube.wait_phase(ns, "nr", "Running")
    kube.finish_pod(ns, "nr-0-0", code, reason=term_reason)
    status = kube.wait_phase(ns, "nr", "Failed")
    assert reason(kube, ns, "nr", "Failed") == ("True", expected)
    assert status["restarts"] == 0
    assert "worker 0 (pod nr-0-0)" in status["message"]
    wait_for(lambda: [p.metadata.name for p in kube.pods(ns, "nr") if p.metadata.deletion_timestamp is None]
             == ["nr-0-0"], 30, "the survivor deleted, the failed pod kept")


def test_exhausted_backoff_limit(kube, ns, operator):
    kube.create_job(ns, job_manifest("bl", workers=2, failurePolicy={"backoffLimit": 1, "backoffSeconds": 1}))
    kube.wait_phase(ns, "bl", "Running")
    kube.finish_pod(ns, "bl-0-0", 1)
    wait_for(lambda: kube.running(ns, "bl", 1, 2), 30, "attempt 1 running")
    kube.finish_pod(ns, "bl-1-1", 1)
    status = kube.wait_phase(ns, "bl", "Failed")
    assert reason(kube, ns, "bl", "Failed") == ("True", "BackoffLimitExceeded")
    assert (status["restarts"], status["attempt"]) == (1, 1)


@contextlib.contextmanager
def status_history(kube, ns: str, name: str) -> Iterator[list[dict]]:
    """Every status the job is written with, in order, from a watch: a status that lasts a
    moment (a backoff) is seen however slowly the test reads."""
    seen: list[dict] = []
    w = watch.Watch()
    done = threading.Event()

    def run() -> None:
        try:
            for ev in w.stream(kube.custom.list_namespaced_custom_object, api.GROUP, api.VERSION, ns, api.PLURAL,
                               field_selector=f"metadata.name={name}", timeout_seconds=300):
                seen.append(ev["object"].get("status") or {})
        except Exception:
            if not done.is_set():  # (once the test is done, its namespace going away ends the watch)
                raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        w.stop()


def test_backoff_delays_the_second_restart(kube, ns, operator):
    """The first restart is immediate, the second waits backoffSeconds: read from the statuses
    the operator wrote and the pods' own timestamps, never from how long the test waited."""
    with status_history(kube, ns, "bo") as history:
        kube.create_job(ns, job_manifest("bo", workers=1, failurePolicy={"backoffSeconds": 2}))
        kube.wait_phase(ns, "bo", "Running")
        kube.finish_pod(ns, "bo-0-0", 1)
        wait_for(lambda: kube.running(ns, "bo", 1, 1), 30, "first restart")
        kube.finish_pod(ns, "bo-1-0", 1)
        [pod] = wait_for(lambda: kube.running(ns, "bo", 2, 1), 30, "second restart after the backoff")
        wait_for(lambda: any(s.get("attempt") == 2 and s.get("phase") == "Running" for s in history), 30,
                 "the watch to see attempt 2 running")
    first = [s for s in history if s.get("attempt") == 1]
    assert first and not any(s.get("backoffUntil") for s in first)  # the first restart waits for nothing
    second = [s for s in history if s.get("attempt") == 2]
    waits = {s["backoffUntil"] for s in second if s.get("backoffUntil")}
    assert len(waits) == 1, second
    until = datetime.fromisoformat(waits.pop())
    assert second[0]["phase"] == "Restarting" and second[0].get("backoffUntil")  # decided, then waited
    failed_at = kube.core.read_namespaced_pod("bo-1-0", ns).status.container_statuses[0].state.terminated.finished_at
    assert until - failed_at >= timedelta(seconds=2)  # (finishedAt has whole seconds: never later than the failure)
    # creationTimestamp has whole seconds too: the pod came no earlier than the second the backoff ended
    assert pod.metadata.creation_timestamp >= until.replace(microsecond=0)
    assert kube.status(ns, "bo").get("backoffUntil") is None  # a null in a merge patch removes the field


def test_eviction_is_a_disruption_not_a_restart(kube, ns, operator):
    kube.create_job(ns, job_manifest("ev", workers=2, failurePolicy={"backoffLimit": 0}))
    kube.wait_phase(ns, "ev", "Running")
    kube.evict(ns, "ev-0-1")
    wait_for(lambda: kube.running(ns, "ev", 1, 2), 30, "new gang after the eviction")
    status = kube.wait_phase(ns, "ev", "Running")
    assert (status["restarts"], status["disruptions"], status["attempt"]) == (0, 1, 1)
    assert "Evicted" in [r for r, _ in kube.events(ns, "ev")]


def test_pod_deleted_by_someone_else_restarts_the_gang(kube, ns, operator):
    kube.create_job(ns, job_manifest("del", workers=2))
    kube.wait_phase(ns, "del", "Running")
    kube.core.delete_namespaced_pod("del-0-0", ns, grace_period_seconds=0)
    wait_for(lambda: kube.running(ns, "del", 1, 2), 30, "new gang after the deletion")
    status = kube.wait_phase(ns, "del", "Running")
    assert (status["restarts"], status["disruptions"]) == (0, 1)


def test_node_deletion_is_a_disruption(kube, ns, operator, cluster):
    if not cluster.local:
        pytest.skip("deletes a node: only on the tests' own kwok cluster")
    node = f"kwok-lost-{ns}"
    kube.core.create_node(client.V1Node(
        metadata=client.V1ObjectMeta(name=node, annotations={"kwok.x-k8s.io/node": "fake"},
                                     labels={"type": "kwok", "lost": ns}),
        status=client.V1NodeStatus(allocatable={"cpu": "8", "memory": "32Gi", "pods": "20"},
                                   capacity={"cpu": "8", "memory": "32Gi", "pods": "20"})))
    try:
        template = {"spec": {"nodeSelector": {"lost": ns},
                             "containers": [{"name": "trainer", "image": "trainyard/trainer:test"}]}}
        kube.create_job(ns, job_manifest("nl", workers=2, template=template))
        kube.wait_phase(ns, "nl", "Running")
        kube.core.delete_node(node)
        # the real pod garbage collector removes pods bound to a node that no longer exists
        status = wait_for(lambda: (s := kube.status(ns, "nl")).get("disruptions") == 1 and s, 120,
                          "a disruption after the node was deleted")
        assert (status["restarts"], status["attempt"]) == (0, 1)
    finally:
        with contextlib.suppress(client.ApiException):
            kube.core.delete_node(node)


def test_image_pull_backoff_past_the_startup_deadline_fails(kube, ns, operator, cluster):
    if not cluster.local:
        pytest.skip("adds a node: only on the tests' own kwok cluster")
    with held_node(kube, f"held-{ns}") as node:  # only this test writes the pod's status
        template = {"spec": {"nodeName": node,
                             "containers": [{"name": "trainer", "image": "registry.invalid/nope:1"}]}}
        kube.create_job(ns, job_manifest("ipb", workers=1, template=template,
                                         runPolicy={"startupDeadlineSeconds": 3}))
        wait_for(lambda: kube.pods(ns, "ipb"), 30, "the pod")
        kube.set_waiting(ns, "ipb-0-0", "ImagePullBackOff", 'Back-off pulling image "registry.invalid/nope:1"')
        wait_for(lambda: reason(kube, ns, "ipb", "Running") == ("False", "ImagePullBackOff"), 30, "stuck condition")
        status = kube.wait_phase(ns, "ipb", "Failed", timeout=30)
        assert reason(kube, ns, "ipb", "Failed") == ("True", "ImagePullBackOff")
        assert "startupDeadlineSeconds=3" in status["message"]


def test_unschedulable_past_the_startup_deadline_fails(kube, ns, operator):
    template = {"spec": {"nodeSelector": {"no-such-label": "x"},
                         "containers": [{"name": "trainer", "image": "trainyard/trainer:test"}]}}
    kube.create_job(ns, job_manifest("uns", workers=2, template=template, runPolicy={"startupDeadlineSeconds": 3}))
    status = kube.wait_phase(ns, "uns", "Failed", timeout=60)
    assert reason(kube, ns, "uns", "Failed") == ("True", "Unschedulable")
    assert "didn't match Pod's node affinity/selector" in status["message"]


def test_elastic_scale_with_kubectl(kube, ns, operator, installed):
    kube.create_job(ns, job_manifest("el", workers=2, elastic={"minWorkers": 1, "maxWorkers": 4}))
    kube.wait_phase(ns, "el", "Running")
    installed.kubectl_run("scale", "dtj/el", "-n", ns, "--replicas=4")
    wait_for(lambda: kube.running(ns, "el", 0, 4), 30, "4 running workers")
    wait_for(lambda: kube.status(ns, "el")["workers"]["desired"] == 4, 30, "desired 4")
    installed.kubectl_run("scale", "dtj/el", "-n", ns, "--replicas=1")
    wait_for(lambda: [p.metadata.name for p in kube.pods(ns, "el", live_only=True)] == ["el-0-0"], 30, "scaled to 1")
    # the deletes go first, the status write after: wait for it
    status = wait_for(lambda: (s := kube.status(ns, "el"))["workers"]["desired"] == 1 and s, 30, "the status of 1")
    # a scale-down starts a new attempt, so a later scale-up never reuses a deleted worker's name;
    # the rendezvous is the same one: nothing restarted, nothing counted
    assert (status["restarts"], status["disruptions"], status["attempt"], status["rendezvousAttempt"]) == (0, 0, 1, 0)
    out = installed.kubectl_run("scale", "dtj/el", "-n", ns, "--replicas=9", check=False)
    assert out.returncode != 0 and "spec.workers must lie within" in out.stderr


def test_worker_scope_replaces_one_worker(kube, ns, operator):
    kube.create_job(ns, job_manifest("ws", workers=3, elastic={"minWorkers": 2, "maxWorkers": 3},
                                     failurePolicy={"restartScope": "Worker", "inPlaceRestarts": 1}))
    kube.wait_phase(ns, "ws", "Running")
    kube.finish_pod(ns, "ws-0-2", 1)
    wait_for(lambda: kube.running(ns, "ws", 1, 1), 30, "the replacement of worker 2")
    status = kube.wait_phase(ns, "ws", "Running")
    assert (status["restarts"], status["attempt"], status["rendezvousAttempt"]) == (1, 1, 0)
    live = sorted(p.metadata.name for p in kube.pods(ns, "ws", live_only=True))
    assert live == ["ws-0-0", "ws-0-1", "ws-1-2"]
    uid = kube.job(ns, "ws")["metadata"]["uid"]
    assert env_of(kube.core.read_namespaced_pod("ws-1-2", ns))["PET_RDZV_ID"] == f"{uid}-0"


def test_operator_killed_mid_reconcile_converges_without_duplicates(kube, ns, operator):
    kube.create_job(ns, job_manifest("crash", workers=30))
    wait_for(lambda: kube.pods(ns, "crash"), 30, "the first pods")
    operator.kill()  # mid fan-out, most likely; whatever the moment, the result must be exact
    operator.start()
    wait_for(lambda: kube.running(ns, "crash", 0, 30), 60, "30 running pods")
    status = kube.wait_phase(ns, "crash", "Running")
    assert len(kube.pods(ns, "crash")) == 30
    assert (status["attempt"], status["restarts"]) == (0, 0)

    kube.finish_pod(ns, "crash-0-7", 1)
    wait_for(lambda: kube.status(ns, "crash").get("attempt") == 1, 30, "the restart decided")
    operator.kill()  # the decision is persisted; the pods may or may not have been touched
    operator.start()
    wait_for(lambda: kube.running(ns, "crash", 1, 30), 60, "30 running pods of attempt 1")
    status = kube.wait_phase(ns, "crash", "Running")
    assert (status["attempt"], status["restarts"]) == (1, 1)
    wait_for(lambda: [p.metadata.name for p in kube.pods(ns, "crash", 0)] == ["crash-0-7"], 60, "old gang gone")
    assert max(live_indices_by_attempt(kube, ns, "crash").values()) == 1


def test_bad_object_that_slips_past_the_schema_fails_cleanly(kube, ns, operator, installed):
    """An older or hand-edited CRD without our CEL rules lets a bad spec in: the operator must fail
    that job with a reason naming the field, and keep serving the others."""
    crd_name = "distributedtrainingjobs.trainyard.dev"
    path = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations"
    kube.ext.patch_custom_resource_definition(crd_name, [{"op": "remove", "path": path}])
    try:
        wait_for(lambda: _created(kube, ns, job_manifest("odd", workers=1, failurePolicy={"restartScope": "Worker"})),
                 30, "the looser schema to be served")
    finally:
        installed.kubectl_run("apply", "--server-side", "--force-conflicts", "-f",
                              str(REPO / "crds" / "trainyard.dev_distributedtrainingjobs.yaml"))
    status = kube.wait_phase(ns, "odd", "Failed")
    assert reason(kube, ns, "odd", "Failed") == ("True", "InvalidSpec")
    assert "spec.failurePolicy.restartScope Worker needs spec.elastic" in status["message"]
    assert kube.pods(ns, "odd") == []
    kube.create_job(ns, job_manifest("after", workers=1))
    kube.wait_phase(ns, "after", "Running")


def _created(kube, ns, body) -> bool:
    try:
        kube.create_job(ns, body)
        return True
    except client.ApiException as e:
        if e.status == 422:
            return False
        raise
