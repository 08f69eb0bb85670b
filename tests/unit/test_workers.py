"""Pods as the engine sees them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trainyard.api import reasons as R
from trainyard.engine.workers import State, Worker
from trainyard.kube.pods import from_pod


def pod(phase="Running", labels=None, deletion=None, reason=None, conditions=None, containers=None, message=None):
    status = {"phase": phase, "conditions": conditions or [], "containerStatuses": containers or []}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    meta = {"name": "j-0-1", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": labels if labels is not None else {"trainyard.dev/worker-index": "1", "trainyard.dev/attempt": "0"}}
    if deletion:
        meta["deletionTimestamp"] = deletion
    return {"metadata": meta, "status": status}


def terminated(code, reason="Error", name="trainer"):
    return [{"name": name, "state": {"terminated": {"exitCode": code, "reason": reason,
                                                    "finishedAt": "2026-01-01T00:01:00Z"}}}]


T = datetime(2026, 1, 1, tzinfo=UTC)


def test_not_a_worker():
    assert from_pod(pod(labels={})) is None
    assert from_pod(pod(labels={"trainyard.dev/worker-index": "x", "trainyard.dev/attempt": "0"})) is None


def test_running_and_ready():
    w = from_pod(pod(conditions=[{"type": "Ready", "status": "True"}]))
    assert w == Worker("j-0-1", 1, 0, State.RUNNING, ready=True, created_at=T)


@pytest.mark.parametrize(("code", "reason", "oom"), [(1, "Error", False), (137, "OOMKilled", True), (137, "Error", False),
                                                     (143, "Error", False)])
def test_failed_exit_codes(code, reason, oom):
    w = from_pod(pod("Failed", containers=terminated(code, reason)))
    assert (w.state, w.exit_code, w.oom, w.reason, w.disruption) == (State.FAILED, code, oom, reason, None)


def test_succeeded():
    assert from_pod(pod("Succeeded", containers=terminated(0, "Completed"))).state == State.SUCCEEDED


def test_trainer_exit_decides_even_while_a_sidecar_runs():
    w = from_pod(pod("Running", containers=terminated(3) + [{"name": "side", "state": {"running": {}}}]))
    assert (w.state, w.exit_code) == (State.FAILED, 3)


@pytest.mark.parametrize(("kw", "disruption"), [
    ({"phase": "Failed", "reason": "Evicted", "message": "low memory"}, R.EVICTED),
    ({"phase": "Failed", "reason": "Terminated"}, R.NODE_LOST),
    ({"phase": "Running", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                          "reason": "EvictionByEvictionAPI"}]}, R.EVICTED),
    ({"phase": "Running", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                          "reason": "DeletionByTaintManager"}]}, R.NODE_LOST),
    ({"phase": "Running", "deletion": "2026-01-01T00:02:00Z"}, R.POD_DELETED),
])
def test_disruptions(kw, disruption):
    w = from_pod(pod(**kw))
    assert (w.state, w.disruption) == (State.FAILED, disruption)


def test_a_finished_pod_being_deleted_is_not_a_disruption():
    w = from_pod(pod("Failed", deletion="2026-01-01T00:02:00Z", containers=terminated(1)))
    assert (w.state, w.disruption, w.exit_code) == (State.FAILED, None, 1)


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"])
def test_stuck_pending(reason):
    w = from_pod(pod("Pending", containers=[{"name": "trainer", "state": {"waiting": {"reason": reason, "message": "m"}}}]))
    assert (w.state, w.reason, w.message) == (State.PENDING, reason, "m")


def test_container_creating_is_not_stuck():
    w = from_pod(pod("Pending", containers=[{"name": "trainer", "state": {"waiting": {"reason": "ContainerCreating"}}}]))
    assert (w.state, w.reason) == (State.PENDING, "")


def test_unschedulable():
    w = from_pod(pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                             "message": "0/3 nodes"}]))
    assert (w.state, w.reason, w.message) == (State.PENDING, R.UNSCHEDULABLE, "0/3 nodes")


def test_vanished():
    w = from_pod(pod()).vanished()
    assert (w.state, w.disruption, w.failed, w.active) == (State.VANISHED, R.POD_DELETED, True, False)


def test_launcher_hung_exit_code():
    w = from_pod(pod("Failed", containers=[{"name": "trainer", "state": {"terminated": {
        "exitCode": 86, "reason": "Error", "message": "Hung: no training progress for 60 s"}}}]))
    assert (w.hung, w.oom, w.message) == (True, False, "Hung: no training progress for 60 s")


# -- what the watch keeps of a pod (kube.pods.lean_pod, kopf_patches 3.)

class _Reads(dict):
    """A dict that records which keys were read."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def _full_pod(status: dict) -> dict:
    """The pod the builder makes, as the apiserver returns it: managedFields, a node, a status."""
    from trainyard.engine import Launch
    from trainyard.kube.manifests import worker_pod

    from .conftest import make_job
    p = worker_pod(make_job(), Launch("demo-0-1", 1, 0, 0))
    p["metadata"].update(creationTimestamp="2026-01-01T00:00:00Z", uid="u", resourceVersion="7", managedFields=[
        {"manager": "trainyard", "operation": "Update", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {"f:containers": {'k:{"name":"trainer"}': {".": {}, "f:env": {}}}}}}])
    p["spec"]["nodeName"] = "node-a"
    p["status"] = status
    return p


STATUSES = [
    pod()["status"],
    pod(conditions=[{"type": "Ready", "status": "True"}])["status"],
    pod("Failed", containers=terminated(137, "OOMKilled"))["status"],
    pod("Succeeded", containers=terminated(0, "Completed"))["status"],
    pod("Failed", reason="Evicted", message="low on memory")["status"],
    pod("Pending", containers=[{"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff"}}}])["status"],
    pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}])["status"],
    {"phase": "Running", "podIP": "10.0.0.9", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                                               "reason": "DeletionByTaintManager"}]},
]


@pytest.mark.parametrize("status", STATUSES)
def test_a_lean_pod_is_the_same_worker_and_a_fraction_of_the_pod(status):
    import copy
    import json

    from trainyard.kube.pods import lean_pod
    full = _full_pod(status)
    lean = lean_pod(copy.deepcopy(full))
    assert from_pod(lean) == from_pod(full) is not None
    assert lean["spec"] == {"nodeName": "node-a"} and "managedFields" not in lean["metadata"]
    assert lean["metadata"]["labels"] == full["metadata"]["labels"] and lean["status"] == full["status"]
    assert len(json.dumps(lean)) < len(json.dumps(full)) / 2


def test_from_pod_reads_of_the_spec_only_what_the_lean_pod_keeps():
    from trainyard.kube.pods import POD_SPEC_READ
    for status in STATUSES:
        p = _full_pod(status)
        p["spec"] = _Reads(p["spec"])
        from_pod(p)
        assert p["spec"].read <= set(POD_SPEC_READ), p["spec"].read


def test_a_lean_node_is_the_same_node_state():
    import copy

    from trainyard.kube.nodes import lean_node, node_state
    node = {"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "kubelet"}]},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:05:00Z"}],
                       "images": [{"names": [f"registry/img{i}@sha256:{'0' * 64}"], "sizeBytes": i} for i in range(50)]}}
    lean = lean_node(copy.deepcopy(node))
    assert node_state(lean) == node_state(node) and "images" not in lean["status"]
    assert "managedFields" not in lean["metadata"]
    watched = copy.deepcopy(node)
    watched["status"] = _Reads(watched["status"])
    node_state(watched)
    assert watched["status"].read <= {"conditions"}
