"""The Kubernetes backend and the reconcile loop, against an in-memory client: the order of the
writes, conflicts, refused creations, and the wake-ups of a job's loop."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes.client.exceptions import ApiException

from trainyard.api import reasons as R
from trainyard.engine import Applied, decide
from trainyard.engine.workers import State
from trainyard.kube.backend import KubeBackend
from trainyard.kube.leases import LeaseState
from trainyard.kube.loop import RESYNC_SECONDS, JobLoop, Loops
from trainyard.kube.manifests import progress_lease, progress_role, progress_role_binding

from .conftest import BASE, T0, UID, at, make_job, merge, wk
from .fakes import FakeClient

RUNNING = {"phase": "Running", "startTime": T0.isoformat(), "attempt": 0,
           "conditions": [{"type": "Created", "status": "True", "reason": "WorkersCreated"}]}


def backend(client: FakeClient, pods: list) -> KubeBackend:
    return KubeBackend(client, lambda: [(UID, w) for w in pods])


def test_a_gang_restart_deletes_the_old_gang_before_creating_the_new_one_and_posts_events_last():
    client = FakeClient(merge(BASE, {"status": RUNNING}))
    job = make_job(status=RUNNING, resourceVersion="1")
    pods = [wk(0), wk(1, state=State.FAILED, exit_code=1)]
    b = backend(client, pods)
    plan = decide(job, b.observe(job)[0], at(5))
    assert b.apply(job, plan) == Applied.DONE
    verbs = client.verbs()
    assert verbs.index("delete") < min(i for i, v in enumerate(verbs) if v == "create")
    assert verbs.index("patch_status") < verbs.index("event")
    assert sorted(c[2] for c in client.calls if c[0] == "create") == [
        "demo", "demo-1-0", "demo-1-1"]  # and the Service
    assert client.job["status"]["attempt"] == 1


def test_the_pods_of_a_job_of_the_same_name_are_not_ours():
    client = FakeClient()
    job = make_job()
    b = KubeBackend(client, lambda: [("another-uid", wk(0)), (UID, wk(1))])
    assert [w.name for w in b.observe(job)[0]] == ["demo-0-1"]


def test_a_refused_creation_is_not_counted_as_created_and_becomes_status():
    client = FakeClient(dict(BASE))
    body = '{"kind": "Status", "message": "pods \\"demo-0-1\\" is forbidden: exceeded quota: q, requested: pods=1", "reason": "Forbidden"}'
    client.fail_creates["demo-0-1"] = ApiException(status=403, reason="Forbidden")
    client.fail_creates["demo-0-1"].body = body
    loop = JobLoop("ml", "demo", client, lambda: [])
    loop.reconcile()
    st = client.job["status"]
    created = next(c for c in st["conditions"] if c["type"] == "Created")
    assert (created["status"], created["reason"]) == ("False", R.QUOTA_EXCEEDED)
    assert "pod demo-0-1 (worker 1)" in created["message"] and "exceeded quota" in created["message"]
    assert st["members"] == [{"attempt": 0, "indexes": "1", "created": False},
                             {"attempt": 0, "indexes": "0", "created": True}]
    # the Service, two pods: once each, the retry waits its backoff
    assert client.verbs().count("create") == 3
    assert client.verbs().count("patch_status") == 1 and ("event", R.QUOTA_EXCEEDED) in client.calls


@pytest.mark.usefixtures("first_write_at_once")
def test_the_loop_decides_again_after_a_conflict():
    client = FakeClient(dict(BASE))
    client.conflicts = 1
    loop = JobLoop("ml", "demo", client, lambda: [])
    assert loop.reconcile() == 600.0  # look again at the startup deadline, unless the pods start first
    verbs = client.verbs()
    assert verbs.count("get") == 2 and verbs.count("patch_status") == 2
    assert client.job["status"]["phase"] == "Pending"
    second = verbs.index("get", 1)
    assert "event" not in verbs[:second]  # no event for the decision whose status write was refused


def test_a_job_the_models_refuse_ends_failed_and_names_the_field():
    client = FakeClient(merge(BASE, {"spec": {"workers": "many"}}))
    loop = JobLoop("ml", "demo", client, lambda: [])
    assert loop.reconcile() is None
    st = client.job["status"]
    assert st["phase"] == "Failed" and st["message"].startswith("invalid spec: spec.workers: ")
    assert ("event", R.INVALID_SPEC) in client.calls
    client.calls.clear()
    assert loop.reconcile() is None and "patch_status" not in client.verbs()  # said once


def test_a_deleted_job_stops_deciding():
    loop = JobLoop("ml", "demo", FakeClient(None), lambda: [])
    assert loop.reconcile() is None


@pytest.mark.usefixtures("first_write_at_once")
def test_an_event_wakes_the_jobs_loop_which_reconciles_once_per_burst():
    client = FakeClient(dict(BASE))

    async def scenario() -> int:
        loops = Loops(client)
        for _ in range(5):  # a burst of events before the loop runs
            loops.wake("ml", "demo")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if client.verbs().count("get") >= 1 and len(client.pool._threads) >= 0:
                break
        await asyncio.sleep(0.05)
        gets = client.verbs().count("get")
        loops.stop_all()
        return gets

    assert asyncio.run(scenario()) == 1
    assert client.job["status"]["phase"] == "Pending"


def test_decisions_are_the_same_through_the_backend_as_through_the_engine():
    client = FakeClient(dict(BASE))
    job = make_job(resourceVersion="1")
    b = backend(client, [])
    plan = decide(job, b.observe(job)[0], T0)
    b.apply(job, plan)
    assert sorted(c[2] for c in client.calls if c[0] == "create") == ["demo", "demo-0-0", "demo-0-1"]


def _next(b: KubeBackend, client: FakeClient, seconds: float) -> None:
    """One more decision, on the job as the last status write left it."""
    job = make_job(status=client.job.get("status"), resourceVersion=client.job["metadata"]["resourceVersion"])
    b.apply(job, decide(job, b.observe(job)[0], at(seconds)))


def _progress_writes(client: FakeClient) -> list[tuple]:
    return [c for c in client.calls if (c[0] == "create" and c[2] == "demo-progress") or c[0] == "patch_lease"]


@pytest.mark.usefixtures("first_write_at_once")
def test_the_progress_lease_is_made_once_worker_0_has_its_ip_with_that_ip_in_it():
    """Not at the gang's start (in a burst their three creations held back every job's pods), and
    one write fewer: the Lease carries the rendezvous address it would otherwise be patched with."""
    client, pods, leases = FakeClient(dict(BASE)), [], []
    b = KubeBackend(client, lambda: [(UID, w) for w in pods], leases=lambda: list(leases))
    job = make_job(resourceVersion="1")
    b.apply(job, decide(job, b.observe(job)[0], T0))
    assert _progress_writes(client) == []  # the gang is created; no trainer of it runs yet
    pods[:] = [wk(0, state=State.PENDING), wk(1)]  # worker 0 scheduled, no address yet
    _next(b, client, 1)
    assert _progress_writes(client) == []
    pods[:] = [wk(0, address="10.244.0.7"), wk(1, address="10.244.0.8")]
    before = len(client.calls)
    _next(b, client, 2)
    assert [c[1] for c in _progress_writes(client)] == ["Lease", "Role", "RoleBinding"]
    # after the decision's own writes (all Running: its status and event), never in their way
    verbs = [c[0] for c in client.calls[before:]]
    assert "patch_status" in verbs and "event" in verbs and max(
        verbs.index("patch_status"), verbs.index("event")) < verbs.index("create")
    made = [m for m in client.made if m["kind"] == "Lease"]
    assert made[0]["metadata"]["annotations"] == {"trainyard.dev/rendezvous": '{"attempt":0,"ip":"10.244.0.7"}'}
    # the watch has not shown the Lease yet: nothing again, and no patch of what the Lease says already
    _next(b, client, 3)
    leases.append((UID, LeaseState("demo-progress", rendezvous=(0, "10.244.0.7"))))
    _next(b, client, 4)
    assert len(_progress_writes(client)) == 3
    # a new operator process, the Lease in its index: nothing made again
    b2 = KubeBackend(client, lambda: [(UID, w) for w in pods], leases=lambda: list(leases))
    _next(b2, client, 5)
    assert len(_progress_writes(client)) == 3


def _made_by_an_earlier_process(client: FakeClient, *kinds: str) -> None:
    job = make_job()
    for build in (progress_lease, progress_role, progress_role_binding):
        if (m := build(job))["kind"] in kinds:
            client.create(m)
    client.calls.clear()


@pytest.mark.usefixtures("first_write_at_once")
def test_a_new_gang_patches_its_worker_0s_ip_into_the_lease_once():
    client = FakeClient(merge(BASE, {"status": RUNNING}))
    _made_by_an_earlier_process(client, "Lease", "Role", "RoleBinding")
    leases = [(UID, LeaseState("demo-progress", rendezvous=(0, "10.244.0.7")))]
    pods = [wk(0, address="10.244.0.7"), wk(1, state=State.FAILED, exit_code=1, address="10.244.0.8")]
    b = KubeBackend(client, lambda: [(UID, w) for w in pods], leases=lambda: list(leases))
    _next(b, client, 5)  # the gang restarts
    assert client.job["status"]["rendezvousAttempt"] == 1 and _progress_writes(client) == []
    pods[:] = [wk(0, attempt=1, address="10.244.0.9"), wk(1, attempt=1, state=State.PENDING)]
    _next(b, client, 6)
    _next(b, client, 7)
    assert _progress_writes(client) == [("patch_lease", "demo-progress",
                                         {"trainyard.dev/rendezvous": '{"attempt":1,"ip":"10.244.0.9"}'})]
    # this process had not seen the Role and RoleBinding: it read them, once, and wrote neither
    assert [c for c in client.calls if c[0] == "read"] == [("read", "Role", "demo-progress"),
                                                         ("read", "RoleBinding", "demo-progress")]


@pytest.mark.usefixtures("first_write_at_once")
def test_a_progress_child_an_earlier_operator_could_not_make_is_made_at_the_next_gang_start():
    """The RoleBinding was refused and the operator restarted: a plain restart writes nothing, the
    next gang the new process starts makes the binding (what the Warning event promises)."""
    client = FakeClient(merge(BASE, {"status": RUNNING}))
    _made_by_an_earlier_process(client, "Lease", "Role")
    leases = [(UID, LeaseState("demo-progress", rendezvous=(0, "10.244.0.7")))]
    pods = [wk(0, address="10.244.0.7"), wk(1, address="10.244.0.8")]
    b = KubeBackend(client, lambda: [(UID, w) for w in pods], leases=lambda: list(leases))
    _next(b, client, 5)
    _next(b, client, 6)
    assert _progress_writes(client) == [] and "read" not in client.verbs()  # not even a read
    pods[1] = wk(1, state=State.FAILED, exit_code=1, address="10.244.0.8")
    _next(b, client, 7)  # the gang restarts
    pods[:] = [wk(0, attempt=1, address="10.244.0.9"), wk(1, attempt=1, address="10.244.0.10")]
    _next(b, client, 8)
    _next(b, client, 9)
    assert _progress_writes(client) == [
        ("create", "RoleBinding", "demo-progress"),
        ("patch_lease", "demo-progress", {"trainyard.dev/rendezvous": '{"attempt":1,"ip":"10.244.0.9"}'})]
    assert ("RoleBinding", "demo-progress") in client.exists
    assert not [e for e in client.events if e.reason == R.PROGRESS_UNAVAILABLE]


@pytest.mark.usefixtures("first_write_at_once")
def test_a_refused_progress_child_is_a_warning_event_on_the_job_which_still_starts():
    client = FakeClient(dict(BASE))
    refusal = ApiException(status=403, reason="Forbidden")
    refusal.body = '{"kind": "Status", "message": "rolebindings.rbac.authorization.k8s.io is forbidden", "reason": "Forbidden"}'
    client.fail_creates["RoleBinding/demo-progress"] = refusal
    job = make_job(resourceVersion="1")
    pods: list = []
    b = backend(client, pods)
    assert b.apply(job, decide(job, b.observe(job)[0], T0)) == Applied.DONE
    assert sorted(c[2] for c in client.calls if c[0] == "create" and c[1] == "Pod") == ["demo-0-0", "demo-0-1"]
    pods[:] = [wk(0, address="10.244.0.7"), wk(1, address="10.244.0.8")]
    _next(b, client, 1)
    warnings = [e for e in client.events if e.reason == R.PROGRESS_UNAVAILABLE]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert "RoleBinding demo-progress: rolebindings.rbac.authorization.k8s.io is forbidden" in warnings[0].message
    assert "Lease demo-progress" not in warnings[0].message and "Role demo-progress" not in warnings[0].message
    # a decision that starts no gang does not say it again
    _next(b, client, 2)
    assert len([e for e in client.events if e.reason == R.PROGRESS_UNAVAILABLE]) == 1


def test_the_resync_is_never_skipped_for_a_later_wake_up():
    """Repro 6: a job with a 3600 s deadline was not reconciled for 29 minutes."""
    loop = JobLoop("ml", "demo", FakeClient(dict(BASE)), lambda: [])
    assert loop.next_wait() == RESYNC_SECONDS
    loop.requeue = 3600.0
    assert loop.next_wait() == RESYNC_SECONDS
    loop.requeue = 2.5
    assert loop.next_wait() == 2.5


def test_progress_is_coalesced_and_anything_else_wakes_the_loop_at_once():
    """A gang's pods starting one by one cost one reconcile; a failure never waits for it."""
    from trainyard.kube.loop import PROGRESS_DELAY_SECONDS

    async def scenario() -> tuple[bool, bool, bool, bool]:
        loop = JobLoop("ml", "demo", FakeClient(dict(BASE)), lambda: [])
        for _ in range(8):
            loop.nudge()
        nudged_now = loop.wakeup.is_set()
        await asyncio.sleep(PROGRESS_DELAY_SECONDS + 0.1)
        nudged_later = loop.wakeup.is_set()
        loop.wakeup.clear()
        loop.nudge()
        loop.wake()  # a failure meanwhile: at once, and the pending nudge is folded into it
        at_once = loop.wakeup.is_set() and loop._nudge is None
        loop.wakeup.clear()
        await asyncio.sleep(PROGRESS_DELAY_SECONDS + 0.1)
        return nudged_now, nudged_later, at_once, loop.wakeup.is_set()

    assert asyncio.run(scenario()) == (False, True, True, False)


def test_the_operators_cluster_domain_reaches_every_pod_it_creates():
    async def scenario(client: FakeClient) -> None:
        loops = Loops(client, cluster_domain="corp.example")
        loops.wake("ml", "demo")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if "demo-0-1" in client.created:
                break
        loops.stop_all()

    client = FakeClient(dict(BASE))
    asyncio.run(scenario(client))
    for name in ("demo-0-0", "demo-0-1"):
        env = {e["name"]: e.get("value") for e in client.created[name]["spec"]["containers"][0]["env"]}
        assert env["PET_RDZV_ENDPOINT"] == "demo-0-0.demo.ml.svc.corp.example.:29400", name
