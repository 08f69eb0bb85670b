"""Kueue, route A: a queued job waits for its Workload's admission, runs where the flavours place
it, keeps its admission across gang restarts, stops without a restart when evicted, and the
operator does the job controller's part (PodsReady, the quota released once no worker runs,
Finished)."""

from __future__ import annotations

from datetime import UTC, datetime

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.engine import decide
from trainyard.engine.admission import Admission, Placement
from trainyard.engine.workers import Child, State
from trainyard.kube import kueue
from trainyard.kube.backend import KubeBackend
from trainyard.kube.manifests import worker_pod, workload

from .conftest import BASE, T0, UID, at, make_job, merge, then, wk
from .fakes import FakeClient

QUEUED = {"labels": {"kueue.x-k8s.io/queue-name": "lq"}}
POOL = Placement({"pool": "a"}, [{"key": "trainyard.dev/pool", "operator": "Equal", "value": "a",
                                  "effect": "NoSchedule"}])


def wl_child(**admission) -> list[Child]:
    return [Child("Workload", "dtj-demo-0b7d1c2e", exists=True, admission=Admission("lq", **admission))]


def test_no_worker_before_admission():
    job = make_job(**QUEUED)
    plan = decide(job, [], T0, wl_child(message="insufficient unused quota for cpu in flavor pool, 4 more needed"))
    assert plan.create == [] and plan.status.phase == Phase.PENDING and plan.status.start_time is None
    c = plan.status.condition(R.ADMITTED)
    assert (c.status, c.reason) == ("False", R.WAITING_FOR_ADMISSION)
    assert c.message == ("waiting for Kueue admission in queue ml/lq: insufficient unused quota for cpu in flavor "
                         "pool, 4 more needed")
    assert plan.events == []  # the condition says it; no write for an event


def test_an_admitted_gang_starts_where_the_flavours_place_it_and_keeps_it_across_a_restart():
    job = make_job(**QUEUED)
    plan = decide(job, [], at(1), wl_child(admitted=True, cluster_queue="cq", placement=POOL))
    assert [launch.name for launch in plan.create] == ["demo-0-0", "demo-0-1"] and plan.placement == POOL
    assert plan.status.start_time == at(1)  # the clock starts at admission
    assert [(e.reason, e.message) for e in plan.events][0] == (R.KUEUE_ADMITTED, "admitted by ClusterQueue cq")
    pod = worker_pod(job, plan.create[0], plan.placement)
    assert pod["spec"]["nodeSelector"] == {"pool": "a"} and pod["spec"]["tolerations"] == POOL.tolerations
    job = then(job, plan)
    restart = decide(job, [wk(0), wk(1, state=State.FAILED, exit_code=1)], at(5),
                     wl_child(admitted=True, cluster_queue="cq", placement=POOL))
    assert [launch.name for launch in restart.create] == ["demo-1-0", "demo-1-1"] and restart.placement == POOL
    assert restart.status.restarts == 1 and restart.status.condition(R.ADMITTED).status == "True"


def test_an_eviction_stops_the_gang_without_a_restart_and_queues_it_again():
    job = make_job(**QUEUED)
    job = then(job, decide(job, [], at(1), wl_child(admitted=True, cluster_queue="cq", placement=POOL)))
    running = decide(job, [wk(0), wk(1)], at(2), wl_child(admitted=True, cluster_queue="cq", placement=POOL))
    job = then(job, running)
    assert job.status.phase == Phase.RUNNING
    evicted = decide(job, [wk(0), wk(1)], at(3), wl_child(evicted="Preempted", message="Preempted to accommodate a "
                                                          "workload due to prioritization"))
    st = evicted.status
    assert sorted(evicted.delete) == ["demo-0-0", "demo-0-1"] and evicted.create == []
    assert (st.phase, st.restarts, st.disruptions, st.attempt, st.rendezvous_attempt) == (Phase.PENDING, 0, 1, 1, 1)
    assert (st.condition(R.ADMITTED).status, st.condition(R.ADMITTED).reason) == ("False", R.KUEUE_EVICTED)
    assert [e.reason for e in evicted.events] == [R.KUEUE_EVICTED]
    job = then(job, evicted)
    again = decide(job, [], at(4), wl_child(evicted="Preempted"))  # decided again: nothing counted twice
    assert (again.status.disruptions, again.status.attempt, again.events) == (1, 1, [])
    back = decide(then(job, again), [], at(9), wl_child(admitted=True, cluster_queue="cq", placement=POOL))
    assert [launch.name for launch in back.create] == ["demo-1-0", "demo-1-1"]  # a new gang, a new rendezvous


def test_without_kueue_a_queued_job_waits_and_says_why():
    plan = decide(make_job(**QUEUED), [], T0, wl_child(unavailable=True))
    c = plan.status.condition(R.ADMITTED)
    assert plan.create == [] and (c.status, c.reason) == ("False", R.KUEUE_UNAVAILABLE)
    assert "install Kueue, or remove the label" in c.message and [e.reason for e in plan.events] == [R.KUEUE_UNAVAILABLE]


def test_a_job_without_the_label_ignores_kueue():
    assert len(decide(make_job(), [], T0, []).create) == 2


# -- the driver's part (pure)
def state(**kw) -> kueue.WorkloadState:
    body = {"metadata": {"name": "dtj-demo-0b7d1c2e", "namespace": "ml", "resourceVersion": "7", "generation": 1,
                         "ownerReferences": [{"uid": UID, "controller": True}]},
            "spec": {"active": True}, "status": kw.pop("status", {})}
    return kueue.workload_state(merge(body, kw))


ADMITTED = {"admission": {"clusterQueue": "cq", "podSetAssignments": [
    {"name": "workers", "count": 2, "flavors": {"cpu": "pool", "memory": "pool"}}]},
    "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved"},
                   {"type": "Admitted", "status": "True", "reason": "Admitted"}]}


def test_placement_is_kueues_from_assignment():
    wl = state(status={**ADMITTED, "admissionChecks": [{"name": "prov", "podSetUpdates": [
        {"name": "workers", "nodeSelector": {"zone": "z1"}, "tolerations": [{"key": "spot", "operator": "Exists"}]}]}]})
    flavors = {"pool": {"nodeLabels": {"pool": "a"}, "tolerations": POOL.tolerations}}
    p = kueue.placement(wl, flavors)
    assert p.node_selector == {"pool": "a", "zone": "z1"}
    assert p.tolerations == [*POOL.tolerations, {"key": "spot", "operator": "Exists"}]
    a = kueue.admission("lq", wl, flavors, True)
    assert (a.admitted, a.cluster_queue, a.placement) == (True, "cq", p)


def test_pods_ready_follows_the_gang_and_finished_ends_it():
    job = make_job(**QUEUED)
    wl = state(status=ADMITTED)
    st = job.status.model_copy(update={"phase": Phase.RUNNING})
    conds = kueue.owned_conditions(wl, st)
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == [("PodsReady", "True", "Started")]
    wl = state(status={**ADMITTED, "conditions": ADMITTED["conditions"] + conds})
    assert kueue.owned_conditions(wl, st) is None  # nothing to write
    restarting = kueue.owned_conditions(wl, st.model_copy(update={"phase": Phase.RESTARTING}))
    assert [(c["type"], c["status"], c["reason"]) for c in restarting] == [("PodsReady", "False", "WaitForRecovery")]
    wl = state(status={**ADMITTED, "conditions": ADMITTED["conditions"] + restarting})
    assert kueue.owned_conditions(wl, st)[0]["reason"] == "Recovered"
    done = kueue.owned_conditions(wl, st.model_copy(update={"phase": Phase.SUCCEEDED, "message": "all 2 workers "
                                                            "succeeded"}))
    assert [(c["type"], c["status"], c["reason"]) for c in done] == [("PodsReady", "False", "WaitForRecovery"),
                                                                      ("Finished", "True", "Succeeded")]
    body = kueue.apply_body(wl, done)
    assert body["status"] == {"conditions": done} and body["kind"] == "Workload"


def test_releasing_an_evicted_reservation_is_what_kueues_job_reconciler_does():
    wl = state(status={**ADMITTED, "conditions": ADMITTED["conditions"] + [
        {"type": "Evicted", "status": "True", "reason": "Preempted", "message": "preempted"},
        {"type": "PodsReady", "status": "False", "reason": "WaitForRecovery",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    assert wl.evicted == "Preempted"
    body = kueue.release_body(wl)
    conds = {c["type"]: c for c in body["status"]["conditions"]}
    assert body["metadata"] == {"resourceVersion": "7"} and body["status"]["admission"] is None
    assert (conds["QuotaReserved"]["status"], conds["QuotaReserved"]["reason"]) == ("False", "Pending")
    assert (conds["Admitted"]["status"], conds["Admitted"]["reason"]) == ("False", "NoReservation")
    assert (conds["Requeued"]["status"], conds["Requeued"]["reason"]) == ("True", "Preempted")
    assert conds["PodsReady"]["reason"] == "WaitForStart"
    assert conds["PodsReady"]["lastTransitionTime"] != "2026-01-01T00:00:00Z"  # a fresh clock for waitForPodsReady
    assert conds["Evicted"]["status"] == "True"  # Kueue's, untouched


def test_the_workload_counts_what_will_run():
    job = make_job(spec={"workers": 4, "runPolicy": {"suspend": True}}, **QUEUED)
    w = workload(job)
    assert w["metadata"]["name"] == "dtj-demo-0b7d1c2e" and w["metadata"]["ownerReferences"][0]["uid"] == UID
    assert w["spec"]["queueName"] == "lq" and w["spec"]["active"] is False
    ps = w["spec"]["podSets"][0]
    assert (ps["name"], ps["count"]) == ("workers", 4)
    assert "hostname" not in ps["template"]["spec"] and ps["template"]["spec"]["containers"][0]["name"] == "trainer"


# -- the backend
def test_the_workload_comes_before_any_pod_and_nothing_runs_until_admitted():
    client = FakeClient(merge(BASE, {"metadata": QUEUED}))
    job = make_job(resourceVersion="1", **QUEUED)
    b = KubeBackend(client, lambda: [], kueue_served=lambda: True)
    workers, children = b.observe(job)
    plan = decide(job, workers, datetime.now(UTC), children)
    b.apply(job, plan)
    assert [c[1] for c in client.calls if c[0] == "create"] == ["Workload"]
    assert client.job["status"]["phase"] == "Pending"


def test_the_quota_is_released_only_once_no_evicted_worker_runs():
    evicted = state(status={**ADMITTED, "conditions": ADMITTED["conditions"] + [
        {"type": "Evicted", "status": "True", "reason": "PodsReadyTimeout", "message": "timeout"}]})
    pods = [wk(0, created_at=datetime.now(UTC))]
    client = FakeClient(merge(BASE, {"metadata": QUEUED}))
    job = make_job(resourceVersion="1", **QUEUED)
    b = KubeBackend(client, lambda: [(UID, w) for w in pods], workloads=lambda: [evicted], kueue_served=lambda: True)
    workers, children = b.observe(job)
    plan = decide(job, workers, datetime.now(UTC), children)
    assert plan.delete == ["demo-0-0"]
    b.apply(job, plan)
    assert "patch_workload_status" not in client.verbs()  # worker 0 still runs
    pods.clear()
    job = make_job(resourceVersion=client.job["metadata"]["resourceVersion"], status=client.job["status"], **QUEUED)
    workers, children = b.observe(job)
    b.apply(job, decide(job, workers, datetime.now(UTC), children))
    assert client.verbs().count("patch_workload_status") == 1
