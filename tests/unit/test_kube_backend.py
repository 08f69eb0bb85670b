"""The Kubernetes backend and the reconcile loop, against an in-memory client: the order of the
writes, conflicts, refused creations, and the wake-ups of a job's loop."""

from __future__ import annotations

import asyncio

from kubernetes.client.exceptions import ApiException

from trainyard.api import reasons as R
from trainyard.engine import decide
from trainyard.engine.workers import State
from trainyard.kube.backend import KubeBackend
from trainyard.kube.loop import JobLoop, Loops

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
    plan = decide(job, b.observe(job), at(5))
    assert b.apply(job, plan) is False
    verbs = client.verbs()
    assert verbs.index("delete") < min(i for i, v in enumerate(verbs) if v == "create")
    assert verbs[-1] == "event" and verbs.index("patch_status") < verbs.index("event")
    assert sorted(c[2] for c in client.calls if c[0] == "create") == ["demo", "demo-1-0", "demo-1-1"]  # and the Service
    assert client.job["status"]["attempt"] == 1


def test_the_pods_of_a_job_of_the_same_name_are_not_ours():
    client = FakeClient()
    job = make_job()
    b = KubeBackend(client, lambda: [("another-uid", wk(0)), (UID, wk(1))])
    assert [w.name for w in b.observe(job)] == ["demo-0-1"]


def test_a_refused_creation_is_retried_soon_and_no_longer_expected():
    client = FakeClient(dict(BASE))
    client.fail_creates["demo-0-1"] = ApiException(status=403, reason="Forbidden")
    job = make_job(resourceVersion="1")
    b = backend(client, [])
    plan = decide(job, b.observe(job), T0)
    assert b.apply(job, plan) is True
    assert [w.name for w in b.observe(job)] == ["demo-0-0"]  # the next reconcile creates demo-0-1 again


def test_the_loop_decides_again_after_a_conflict():
    client = FakeClient(dict(BASE))
    client.conflicts = 1
    loop = JobLoop("ml", "demo", client, lambda: [])
    assert loop.reconcile() is None
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
    plan = decide(job, b.observe(job), T0)
    b.apply(job, plan)
    assert sorted(c[2] for c in client.calls if c[0] == "create") == ["demo", "demo-0-0", "demo-0-1"]
