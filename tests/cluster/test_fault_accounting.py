"""Faults seen at once and counted exactly, across operator restarts (issue 11), on the real
control plane with the real operator: one test per repro of the issue."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime

import pytest
from kubernetes import client, watch

from .helpers import env_of, job_manifest, wait_for

TEMPLATE = {"spec": {"containers": [{"name": "trainer", "image": "trainyard/trainer:test",
                                     "command": ["trainyard-launch", "train.py"]}]}}


def status_of(kube, ns, name, **want):
    return wait_for(lambda: (s := kube.status(ns, name)) and all(s.get(k) == v for k, v in want.items()) and s, 60,
                    f"{ns}/{name} status {want} (now {kube.status(ns, name)})")


def test_a_worker_deleted_the_moment_it_appears_is_a_disruption_at_once(kube, ns, operator):
    """Repro 1: force-delete <job>-0-7 the moment the watch shows it ADDED."""
    deleted = threading.Event()

    def killer() -> None:
        w = watch.Watch()
        for ev in w.stream(kube.core.list_namespaced_pod, ns, label_selector="trainyard.dev/job-name=eight",
                           timeout_seconds=60):
            if ev["type"] == "ADDED" and ev["object"].metadata.name == "eight-0-7":
                kube.core.delete_namespaced_pod("eight-0-7", ns, grace_period_seconds=0)
                deleted.set()
                w.stop()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    kube.create_job(ns, job_manifest("eight", workers=8))
    assert deleted.wait(60), "the pod never appeared"
    status = status_of(kube, ns, "eight", disruptions=1, phase="Running", attempt=1)
    assert status["restarts"] == 0


def test_a_pod_deleted_while_the_operator_is_down_is_counted_and_gets_a_new_rendezvous(kube, ns, operator):
    """Repro 4."""
    kube.create_job(ns, job_manifest("down", workers=2))
    kube.wait_phase(ns, "down", "Running")
    uid = kube.job(ns, "down")["metadata"]["uid"]
    operator.kill()
    try:
        kube.core.delete_namespaced_pod("down-0-1", ns, grace_period_seconds=0)
        wait_for(lambda: not any(p.metadata.name == "down-0-1" for p in kube.pods(ns, "down")), 30, "the pod gone")
    finally:
        operator.start()
    status = status_of(kube, ns, "down", disruptions=1, attempt=1, phase="Running")
    assert status["restarts"] == 0
    new = kube.running(ns, "down", 1, 2)
    assert {env_of(p)["PET_RDZV_ID"] for p in new} == {f"{uid}-1"}


def test_worker_scope_counts_a_failure_once_while_a_quota_refuses_its_replacement(kube, ns, operator):
    """Repro 2: 3 workers, elastic 2..3, OnFailure, backoffLimit 3, a ResourceQuota of 2 pods."""
    spec = {"elastic": {"minWorkers": 2, "maxWorkers": 3},
            "failurePolicy": {"restartPolicy": "OnFailure", "restartScope": "Worker", "backoffLimit": 3,
                              "inPlaceRestarts": 1}}
    kube.create_job(ns, job_manifest("quota", workers=3, **spec))
    kube.wait_phase(ns, "quota", "Running")
    kube.core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="pods"), spec=client.V1ResourceQuotaSpec(hard={"pods": "2"})))
    wait_for(lambda: (kube.core.read_namespaced_resource_quota("pods", ns).status.hard or {}).get("pods") == "2", 30,
             "the quota enforced")
    kube.finish_pod(ns, "quota-0-1", 1)
    created = wait_for(lambda: (c := kube.condition(ns, "quota", "Created")) and c["status"] == "False" and c, 30,
                       "the replacement refused")
    assert created["reason"] == "QuotaExceeded" and "quota-1-1" in created["message"]

    def refusals() -> int:
        text = operator.metrics()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith('trainyard_api_requests_total{') and 'verb="create"' in line
                   and 'resource="pods"' in line and 'code="403"' in line)

    wait_for(lambda: refusals() >= 4, 60, "four refused retries")  # 1 s, 2 s, 4 s apart
    status = kube.status(ns, "quota")
    assert (status["restarts"], status["attempt"], status["phase"]) == (1, 1, "Restarting"), status
    kube.core.delete_namespaced_resource_quota("pods", ns)
    status = status_of(kube, ns, "quota", phase="Running")
    assert (status["restarts"], status["attempt"], status["disruptions"]) == (1, 1, 0)
    assert [p.metadata.name for p in kube.pods(ns, "quota", live_only=True)] == ["quota-0-0", "quota-0-2", "quota-1-1"]


def test_scaling_down_and_up_while_a_worker_terminates_is_no_disruption(kube, ns, operator):
    """Repros 3 and 5: the removed worker is held Terminating by a finalizer; its index comes back
    under a new name, and suspend deletes it too."""
    kube.create_job(ns, job_manifest("sc", workers=4, elastic={"minWorkers": 2, "maxWorkers": 4}))
    kube.wait_phase(ns, "sc", "Running")
    kube.core.patch_namespaced_pod("sc-0-3", ns, {"metadata": {"finalizers": ["test.trainyard.dev/hold"]}})
    try:
        kube.patch_job(ns, "sc", {"spec": {"workers": 3}})
        wait_for(lambda: kube.core.read_namespaced_pod("sc-0-3", ns).metadata.deletion_timestamp, 30,
                 "sc-0-3 terminating")
        kube.patch_job(ns, "sc", {"spec": {"workers": 4}})
        status = wait_for(lambda: (s := kube.status(ns, "sc")) and s.get("workers", {}).get("ready") == 4 and s, 60,
                          "4 ready workers")
        assert (status["disruptions"], status["restarts"], status["rendezvousAttempt"]) == (0, 0, 0)
        assert status["phase"] == "Running"
        live = sorted(p.metadata.name for p in kube.pods(ns, "sc", live_only=True))
        assert live == ["sc-0-0", "sc-0-1", "sc-0-2", "sc-1-3"]
        kube.patch_job(ns, "sc", {"spec": {"runPolicy": {"suspend": True}}})
        kube.wait_phase(ns, "sc", "Suspended")
        wait_for(lambda: kube.pods(ns, "sc", live_only=True) == [], 30, "every worker deleted by suspend")
    finally:
        with contextlib.suppress(client.ApiException):
            kube.core.patch_namespaced_pod("sc-0-3", ns, {"metadata": {"finalizers": None}})


def test_the_old_gang_is_told_to_stop_before_the_new_one_is_created(kube, ns, operator):
    """Repro 11: the deletes of the superseded gang precede its successor's creates."""
    kube.create_job(ns, job_manifest("fence", workers=4))
    kube.wait_phase(ns, "fence", "Running")
    order: list[tuple[int, str, str]] = []
    rv = kube.core.list_namespaced_pod(ns).metadata.resource_version
    stop = threading.Event()

    def record() -> None:
        w = watch.Watch()
        for ev in w.stream(kube.core.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=60,
                           label_selector="trainyard.dev/job-name=fence"):
            pod = ev["object"]
            what = "deleting" if pod.metadata.deletion_timestamp else ev["type"]
            order.append((int(pod.metadata.resource_version), what, pod.metadata.name))
            if stop.is_set():
                w.stop()

    t = threading.Thread(target=record, daemon=True)
    t.start()
    kube.finish_pod(ns, "fence-0-2", 1)
    wait_for(lambda: kube.running(ns, "fence", 1, 4), 30, "the new gang running")
    stop.set()
    kube.finish_pod(ns, "fence-1-0", 0)  # one more event so the watch thread sees stop
    t.join(30)
    first_new = min(r for r, what, name in order if what == "ADDED" and name.startswith("fence-1-"))
    deleted = {name for r, what, name in order if what == "deleting" and r < first_new}
    assert deleted == {"fence-0-0", "fence-0-1", "fence-0-3"}, order


def test_a_finished_job_counts_what_its_cleanup_left(kube, ns, operator):
    """Repro 7."""
    kube.create_job(ns, job_manifest("fin", workers=2, failurePolicy={"restartPolicy": "Never"}))
    kube.wait_phase(ns, "fin", "Running")
    kube.finish_pod(ns, "fin-0-0", 1)
    kube.wait_phase(ns, "fin", "Failed")
    status = wait_for(lambda: (s := kube.status(ns, "fin"))["workers"]["active"] == 0 and s, 30, "no active worker")
    assert status["workers"] == {"desired": 2, "active": 0, "ready": 0, "succeeded": 0, "failed": 1}


def _node(kube, name: str, label: str) -> None:
    kube.core.create_node(client.V1Node(
        metadata=client.V1ObjectMeta(name=name, annotations={"kwok.x-k8s.io/node": "fake"},
                                     labels={"type": "kwok", "lost": label}),
        status=client.V1NodeStatus(allocatable={"cpu": "8", "memory": "32Gi", "pods": "20"},
                                   capacity={"cpu": "8", "memory": "32Gi", "pods": "20"})))


def test_a_deleted_node_loses_its_workers_at_once(kube, ns, operator, cluster):
    """Repro 8, first half: seen from the Node, not 40-100 s later from pod garbage collection."""
    if not cluster.local:
        pytest.skip("deletes a node: only on the tests' own kwok cluster")
    node = f"kwok-gone-{ns}"
    _node(kube, node, ns)
    try:
        template = {"spec": {**TEMPLATE["spec"], "nodeSelector": {"lost": ns}}}
        kube.create_job(ns, job_manifest("gone", workers=2, template=template))
        kube.wait_phase(ns, "gone", "Running")
        t0 = time.monotonic()
        kube.core.delete_node(node)
        status = status_of(kube, ns, "gone", disruptions=1)
        seen_after = time.monotonic() - t0
        assert kube.condition(ns, "gone", "Restarting")["reason"] == "NodeLost"
        assert status["restarts"] == 0
        print(f"node deletion seen after {seen_after:.1f} s")
    finally:
        with contextlib.suppress(client.ApiException):
            kube.core.delete_node(node)


def test_a_node_that_stops_being_ready_loses_its_workers_after_the_grace(kube, ns, operator, cluster):
    """Repro 8, second half: NotReady is seen at all, and its pods never stay Terminating."""
    if not cluster.local:
        pytest.skip("takes a node away from kwok: only on the tests' own kwok cluster")
    node = f"kwok-sick-{ns}"
    _node(kube, node, ns)
    try:
        template = {"spec": {**TEMPLATE["spec"], "nodeSelector": {"lost": ns}}}
        kube.create_job(ns, job_manifest("sick", workers=2, template=template))
        kube.wait_phase(ns, "sick", "Running")
        # kwok stops playing its kubelet; the node says NotReady, as a dead kubelet's would
        kube.core.patch_node(node, {"metadata": {"annotations": {"kwok.x-k8s.io/node": None}}})
        now = datetime.now(UTC).isoformat()
        kube.core.patch_node_status(node, {"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "test: kubelet stopped",
             "lastHeartbeatTime": now, "lastTransitionTime": now}]}})
        status = wait_for(lambda: (s := kube.status(ns, "sick")).get("disruptions") == 1 and s, 120,
                          "a disruption after the node went NotReady")
        assert kube.condition(ns, "sick", "Restarting")["reason"] == "NodeLost"
        assert status["restarts"] == 0
        # nobody runs a graceful termination on that node: the operator deleted its pods at once
        wait_for(lambda: [p.metadata.name for p in kube.pods(ns, "sick", 0)] == [], 30, "the lost pods gone")
    finally:
        with contextlib.suppress(client.ApiException):
            kube.core.delete_node(node)


@pytest.mark.parametrize(("code", "term_reason", "phase", "cond", "words"), [
    (137, "Error", "Running", ("Restarting", "WorkerFailed"), "worker 0 (pod rc-0-0) exited with code 137"),
    (3, "Error", "Failed", ("Failed", "NonRetryableExitCode"), "worker 0 (pod rc-0-0) exited with code 3"),
])
def test_the_root_cause_is_the_worker_that_broke_the_gang(kube, ns, operator, code, term_reason, phase, cond, words):
    """Repro 9: the survivor's peer-lost exit (87) is seen first; the killed worker 0 decides."""
    kube.create_job(ns, job_manifest("rc", workers=2, failurePolicy={"restartPolicy": "ExitCode"}))
    kube.wait_phase(ns, "rc", "Running")
    kube.finish_pod(ns, "rc-0-1", 87)
    kube.finish_pod(ns, "rc-0-0", code, reason=term_reason)
    # The decision's event: the Restarting condition it set can be False again (the new gang runs)
    # before a poll sees it, the event stays.
    ev = wait_for(lambda: next(((r, m) for r, m in kube.events(ns, "rc") if r == cond[1]), None), 60,
                  f"event {cond[1]}")
    assert ev[1].startswith(words), kube.events(ns, "rc")
    assert not [m for _, m in kube.events(ns, "rc") if "rc-0-1" in m and "87" in m]  # the survivor is no cause
    assert kube.status(ns, "rc")["phase"] in (phase, "Restarting")
    if cond[0] == "Failed":
        c = kube.condition(ns, "rc", "Failed")
        assert (c["status"], c["reason"]) == ("True", cond[1]) and c["message"].startswith(words), c
