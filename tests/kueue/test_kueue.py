"""A job queued in Kueue (route A, e2e/kueue/README.md) against real Kueue: it waits until
admitted, runs where the ResourceFlavor places it, releases its quota when it ends, keeps its
admission across a gang restart (no eviction loop, kueue#14811), and an eviction stops it, gives
the quota to the next job and queues it again."""

from __future__ import annotations

import time
from typing import Any

from trainyard.api import reasons as R

from ..cluster.helpers import job_manifest
from ..support import wait_for
from .conftest import POOL_LABEL, TOLERATION

WORKERS = 4  # x 1 cpu: one job fills the ClusterQueue's 4 cpu


def queued_job(name: str, **spec: Any) -> dict[str, Any]:
    body = job_manifest(name, workers=WORKERS, **spec)
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "lq"}
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1", "memory": "1Gi"}}
    return body


def workload(kube, ns: str, job: str) -> dict[str, Any] | None:
    items = kube.custom.list_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", ns, "workloads",
                                                      label_selector=f"trainyard.dev/job-name={job}")["items"]
    return items[0] if items else None


def wl_conditions(kube, ns: str, job: str) -> dict[str, tuple[str, str]]:
    wl = workload(kube, ns, job) or {}
    return {c["type"]: (c["status"], c.get("reason", "")) for c in (wl.get("status") or {}).get("conditions") or []}


def cq_reserved_cpu(kube, ns: str) -> str:
    cq = kube.custom.get_cluster_custom_object("kueue.x-k8s.io", "v1beta2", "clusterqueues", f"cq-{ns}")
    usage = (cq.get("status") or {}).get("flavorsReservation") or []
    return next((r["total"] for f in usage for r in f.get("resources") or [] if r["name"] == "cpu"), "0")


def admitted(kube, ns: str, name: str) -> dict[str, Any] | None:
    return kube.condition(ns, name, R.ADMITTED)


def finish_all(kube, ns: str, job: str, attempt: int) -> None:
    for p in kube.pods(ns, job, attempt=attempt, live_only=True):
        kube.finish_pod(ns, p.metadata.name, 0)


def test_a_queued_job_waits_runs_on_its_flavour_and_hands_its_quota_on(kube, ns, operator):
    kube.create_job(ns, queued_job("first"))
    kube.wait_phase(ns, "first", "Running", 90)
    pods = wait_for(lambda: kube.running(ns, "first", 0, WORKERS), 30, "first's pods Running")
    for p in pods:  # the flavour's node labels and toleration; the taint proves the toleration was applied
        assert p.spec.node_selector == POOL_LABEL
        assert any(t.key == TOLERATION["key"] and t.value == TOLERATION["value"] for t in p.spec.tolerations or [])
        assert p.spec.node_name.startswith("kueue-pool-")
    cond = admitted(kube, ns, "first")
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", R.KUEUE_ADMITTED, f"admitted by ClusterQueue cq-{ns}")
    wait_for(lambda: wl_conditions(kube, ns, "first").get("PodsReady") == ("True", "Started"), 30, "PodsReady")
    wl = workload(kube, ns, "first")
    assert wl["metadata"]["ownerReferences"][0]["kind"] == "DistributedTrainingJob" and not wl["metadata"].get("finalizers")
    assert wl["spec"]["podSets"][0]["count"] == WORKERS

    kube.create_job(ns, queued_job("second"))
    waiting = wait_for(lambda: (c := admitted(kube, ns, "second")) and c["reason"] == R.WAITING_FOR_ADMISSION
                       and "insufficient unused quota" in c["message"] and c, 60, "second waiting with Kueue's words")
    assert waiting["message"].startswith(f"waiting for Kueue admission in queue {ns}/lq: ")
    status = kube.status(ns, "second")
    assert status["phase"] == "Pending" and "startTime" not in {k for k, v in status.items() if v}
    assert kube.pods(ns, "second") == []

    finish_all(kube, ns, "first", 0)
    kube.wait_phase(ns, "first", "Succeeded", 60)
    wait_for(lambda: wl_conditions(kube, ns, "first").get("Finished") == ("True", "Succeeded"), 30, "Finished")
    kube.wait_phase(ns, "second", "Running", 90)  # the quota went on to the next job
    assert kube.status(ns, "second")["startTime"]


def test_a_gang_restart_keeps_its_admission_without_an_eviction(kube, ns, operator):
    """kueue#14811: a gang restart must never turn into an eviction loop."""
    kube.create_job(ns, queued_job("keep"))
    kube.wait_phase(ns, "keep", "Running", 90)
    wait_for(lambda: wl_conditions(kube, ns, "keep").get("PodsReady") == ("True", "Started"), 30, "PodsReady")
    kube.create_job(ns, queued_job("other"))
    wait_for(lambda: (c := admitted(kube, ns, "other")) and c["reason"] == R.WAITING_FOR_ADMISSION, 60, "other waits")
    before = workload(kube, ns, "keep")["status"]["admission"]

    kube.finish_pod(ns, "keep-0-2", 1)  # a crash: the gang restarts (restartPolicy OnFailure by default)
    wait_for(lambda: kube.running(ns, "keep", 1, WORKERS), 60, "attempt 1 up")
    kube.wait_phase(ns, "keep", "Running", 60)
    wait_for(lambda: wl_conditions(kube, ns, "keep").get("PodsReady") == ("True", "Recovered"), 30, "Recovered")
    deadline = time.monotonic() + 8  # well past Kueue's re-check of PodsReady: nothing evicts it
    while time.monotonic() < deadline:
        conds = wl_conditions(kube, ns, "keep")
        assert conds.get("Evicted", ("False", ""))[0] != "True", conds
        assert conds["Admitted"] == ("True", "Admitted"), conds
        time.sleep(0.5)
    assert workload(kube, ns, "keep")["status"]["admission"] == before
    assert cq_reserved_cpu(kube, ns) == "4"  # held once, not twice
    assert admitted(kube, ns, "other")["reason"] == R.WAITING_FOR_ADMISSION and kube.pods(ns, "other") == []
    status = kube.status(ns, "keep")
    assert (status["restarts"], status["attempt"], status["disruptions"]) == (1, 1, 0)


def test_an_eviction_stops_the_gang_gives_the_quota_on_and_queues_it_again(kube, ns, operator):
    kube.create_job(ns, queued_job("big"))
    kube.wait_phase(ns, "big", "Running", 90)
    kube.create_job(ns, queued_job("next"))
    wait_for(lambda: (c := admitted(kube, ns, "next")) and c["reason"] == R.WAITING_FOR_ADMISSION, 60, "next waits")

    kube.patch_job(ns, "big", {"spec": {"runPolicy": {"suspend": True}}})  # Kueue evicts it: Deactivated
    kube.wait_phase(ns, "big", "Suspended", 60)
    wait_for(lambda: not kube.pods(ns, "big", live_only=True), 60, "big's workers gone")
    wait_for(lambda: wl_conditions(kube, ns, "big").get("QuotaReserved", ("", ""))[0] == "False", 60,
             "big's reservation released")
    kube.wait_phase(ns, "next", "Running", 90)  # the quota went to the waiting job

    kube.patch_job(ns, "big", {"spec": {"runPolicy": {"suspend": False}}})
    wait_for(lambda: (c := admitted(kube, ns, "big")) and c["status"] == "False", 60, "big queued again")
    assert kube.pods(ns, "big", live_only=True) == []
    finish_all(kube, ns, "next", 0)
    kube.wait_phase(ns, "big", "Running", 90)
    status = kube.status(ns, "big")
    assert status["restarts"] == 0 and status["attempt"] >= 1  # a new gang with a new rendezvous, not a restart
