"""The write budget: a status that changes only its tally (worker counts, messages) waits; anything a
user or a controller acts on is written in the reconcile that decided it, faults and terminal
statuses included."""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes.client.exceptions import ApiException

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.engine import decide
from trainyard.engine.workers import State
from trainyard.engine.writes import COUNTS_INTERVAL_SECONDS, SETTLE_SECONDS, first_gang_created, urgent, write_wait
from trainyard.kube.backend import KubeBackend
from trainyard.kube.loop import JobLoop

from .conftest import BASE, T0, UID, at, make_job, merge, then, wk
from .fakes import FakeClient


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_the_tally_may_wait():
    job = make_job(spec={"workers": 4})
    created = decide(job, [], T0)
    job = then(job, created)
    one_up = decide(job, [wk(0), wk(1, state=State.PENDING), wk(2, state=State.PENDING), wk(3, state=State.PENDING)],
                    at(1))
    assert one_up.status.workers != job.status.workers
    assert one_up.status.message != job.status.message  # "waiting for 3 of 4 ..." and its condition's message
    assert not urgent(job.status, one_up.status) and not one_up.events
    running = decide(job, [wk(i) for i in range(4)], at(2))
    assert urgent(job.status, running.status)  # the phase and the Running condition
    failed = decide(then(job, running), [wk(0), wk(1, state=State.FAILED, exit_code=1), wk(2), wk(3)], at(3))
    assert urgent(then(job, running).status, failed.status)  # a fault: attempt, restarts, members


def test_every_change_but_the_tally_is_urgent():
    st = make_job(status={"phase": "Running", "message": "x", "conditions": [
        {"type": "Running", "status": "True", "reason": R.ALL_WORKERS_RUNNING, "message": "m"}]}).status
    for change in ({"phase": Phase.SUCCEEDED}, {"restarts": 1}, {"disruptions": 1}, {"attempt": 1},
                   {"observed_generation": 2}, {"backoff_until": T0}, {"completion_time": T0},
                   {"members": []}, {"selector": "a=b"}):
        assert urgent(st, st.model_copy(update=change)), change
    reason = st.model_copy(deep=True)
    reason.conditions[0].reason = R.WORKERS_PENDING
    assert urgent(st, reason)
    flipped = st.model_copy(deep=True)
    flipped.conditions[0].status = "False"
    assert urgent(st, flipped)
    added = st.model_copy(deep=True)
    added.conditions.append(added.conditions[0].model_copy(update={"type": R.CREATED}))
    assert urgent(st, added)
    worded = st.model_copy(deep=True)
    worded.conditions[0].message = "other words"
    worded.message = "other words"
    worded.workers.ready = 3
    assert not urgent(st, worded)


def test_when_each_kind_of_status_change_is_due():
    new = make_job(spec={"workers": 2})
    created = decide(new, [], T0)  # the first gang's pods: Pending, Created=True
    job = then(new, created)
    tally = decide(job, [wk(0), wk(1, state=State.PENDING)], at(1))
    running = decide(job, [wk(0), wk(1)], at(2))
    refused = created.status.model_copy(deep=True)
    refused.conditions[0].status = "False"
    assert first_gang_created(new.status, created.status)
    assert not first_gang_created(new.status, refused) and not first_gang_created(job.status, running.status)
    S, C = SETTLE_SECONDS, COUNTS_INTERVAL_SECONDS
    # (old, new, events, held since, last write, now) -> seconds until due
    for args, due in (
        ((new.status, created.status, False, 100.0, None, 100.0), S),  # first gang: waits for its pods to run
        ((new.status, created.status, False, 100.0, None, 100.0 + S), 0.0),  # ... at most SETTLE_SECONDS
        ((new.status, created.status, True, 100.0, None, 100.0), 0.0),  # an event is never held back
        ((new.status, refused, False, 100.0, None, 100.0), 0.0),  # a refusal is written at once
        ((job.status, running.status, False, 100.0, 99.0, 100.0), 0.0),  # a phase change: at once
        ((job.status, tally.status, False, 100.0, 99.0, 100.0), 99.0 + C - 100.0),  # tally: the interval
        ((job.status, tally.status, False, 700.0, 100.0, 700.0), S),  # ... and SETTLE_SECONDS after it moved
        ((job.status, tally.status, False, 700.0, None, 700.0 + S), 0.0),
    ):
        assert write_wait(*args) == due, (args[2:], due)


def now_wk(index: int, **kw):
    """A worker the loop sees (it decides at the wall clock's now): created just now."""
    return wk(index, created_at=datetime.now(UTC), **kw)


def loop_with(client: FakeClient, pods: list, clock: Clock) -> JobLoop:
    loop = JobLoop("ml", "demo", client, lambda: [(UID, w) for w in pods])
    loop.backend = KubeBackend(client, loop.indexed, loop.expectations, loop.log, clock=clock)
    return loop


def test_a_gang_that_runs_within_the_first_write_window_costs_one_status_write_to_running():
    client, clock, pods = FakeClient(merge(BASE, {"spec": {"workers": 4}})), Clock(), []
    loop = loop_with(client, pods, clock)
    wait = loop.reconcile()
    assert client.verbs().count("patch_status") == 0 and wait == SETTLE_SECONDS  # Pending may wait
    created = [c[2] for c in client.calls if c[0] == "create"]
    assert created[0] == "demo" and created[1:5] == [f"demo-0-{i}" for i in range(4)]  # the Service, the pods
    for i in range(3):  # they start one by one: nothing is written, nothing is created again
        pods[:] = [now_wk(j, state=State.RUNNING if j <= i else State.PENDING) for j in range(4)]
        clock.now += 0.5
        assert 0 < loop.reconcile() <= SETTLE_SECONDS - 0.5 * (i + 1)
    assert client.verbs().count("patch_status") == 0 and client.verbs().count("create") == len(created)
    pods[:] = [now_wk(j) for j in range(4)]
    clock.now += 0.5
    loop.reconcile()  # all running: a phase change, written at once with everything before it
    assert client.verbs().count("patch_status") == 1
    st = client.job["status"]
    assert (st["phase"], st["workers"]["ready"]) == ("Running", 4)
    assert {c["type"]: c["status"] for c in st["conditions"]} == {"Created": "True", "Running": "True"}
    assert st["members"] == [{"attempt": 0, "created": True, "indexes": "0-3"}]
    assert [c[1] for c in client.calls if c[0] == "event"] == [R.ALL_WORKERS_RUNNING]


def test_a_gang_slower_than_the_window_shows_pending_then_its_counts_at_the_interval():
    client, clock, pods = FakeClient(merge(BASE, {"spec": {"workers": 4}})), Clock(), []
    loop = loop_with(client, pods, clock)
    loop.reconcile()
    pods[:] = [now_wk(j, state=State.PENDING) for j in range(4)]
    clock.now += 1
    assert loop.reconcile() == SETTLE_SECONDS - 1  # the loop looks again when it is due
    clock.now += SETTLE_SECONDS - 1
    loop.reconcile()
    assert client.verbs().count("patch_status") == 1
    st = client.job["status"]
    assert (st["phase"], st["members"]) == ("Pending", [{"attempt": 0, "created": True, "indexes": "0-3"}])
    pods[:] = [now_wk(0), now_wk(1), now_wk(2, state=State.PENDING), now_wk(3, state=State.PENDING)]
    clock.now += 2
    assert loop.reconcile() == COUNTS_INTERVAL_SECONDS - 2  # only the tally changed: it waits
    assert client.verbs().count("patch_status") == 1
    clock.now += COUNTS_INTERVAL_SECONDS - 2
    loop.reconcile()
    assert client.verbs().count("patch_status") == 2
    assert client.job["status"]["workers"]["ready"] == 2
    assert client.job["status"]["message"] == "waiting for 2 of 4 workers to start"
    clock.now += 1
    assert loop.reconcile() > 590  # nothing waits: the next look is the startup deadline's
    assert client.verbs().count("patch_status") == 2
    assert [c[1] for c in client.calls if c[0] == "event"] == []


def test_the_happy_path_costs_the_children_two_status_writes_and_two_events():
    """Create to Succeeded: the Service, one pod per worker, the status when Running and when
    Succeeded, and an event for each (the budget the bench's P2 counts at the apiserver). Progress
    reporting's Lease, Role and RoleBinding are counted apart (docs/progress.md): made once worker 0
    runs, with its IP in the Lease (no patch of it)."""
    client, clock, pods = FakeClient(merge(BASE, {"spec": {"workers": 8}})), Clock(), []
    loop = loop_with(client, pods, clock)
    loop.reconcile()
    # (seconds later, the workers' states): the first pods of a burst move a while after the last
    # write, and the rest follow within SETTLE_SECONDS
    for later, states in ((0.5, [State.PENDING] * 8), (0.5, [State.RUNNING] * 3 + [State.PENDING] * 5),
                          (0.5, [State.RUNNING] * 8), (600, [State.SUCCEEDED] * 2 + [State.RUNNING] * 6),
                          (1.0, [State.SUCCEEDED] * 8)):
        pods[:] = [now_wk(j, state=s, exit_code=0 if s == State.SUCCEEDED else None,
                          address="" if s == State.PENDING else f"10.244.0.{j}") for j, s in enumerate(states)]
        clock.now += later
        loop.reconcile()
    assert client.job["status"]["phase"] == "Succeeded"
    writes = [c for c in client.calls if c[0] in ("create", "patch_status", "event", "delete", "patch_lease")]
    created = [c[1] for c in writes if c[0] == "create"]
    assert created == ["Service"] + ["Pod"] * 8 + ["Lease", "Role", "RoleBinding"]
    assert [c[0] for c in writes if c[0] != "create"] == ["patch_status", "event", "patch_status", "event"]
    assert [c[1] for c in writes if c[0] == "event"] == [R.ALL_WORKERS_RUNNING, R.ALL_WORKERS_SUCCEEDED]


def test_a_tally_long_after_the_last_write_still_waits_for_the_rest_of_its_burst():
    client, clock, pods = FakeClient(merge(BASE, {"spec": {"workers": 2}})), Clock(), []
    loop = loop_with(client, pods, clock)
    loop.reconcile()
    pods[:] = [now_wk(0), now_wk(1)]
    loop.reconcile()
    assert client.job["status"]["phase"] == "Running" and client.verbs().count("patch_status") == 1
    clock.now += 600  # the last write was long ago
    pods[:] = [now_wk(0, state=State.SUCCEEDED, exit_code=0), now_wk(1)]
    assert loop.reconcile() == SETTLE_SECONDS
    clock.now += SETTLE_SECONDS
    loop.reconcile()
    assert client.verbs().count("patch_status") == 2 and client.job["status"]["workers"]["succeeded"] == 1


def test_a_refused_first_gang_is_written_at_once():
    client, clock = FakeClient(merge(BASE, {"spec": {"workers": 2}})), Clock()
    client.fail_creates["demo-0-1"] = ApiException(status=403, reason="Forbidden")
    loop = loop_with(client, [], clock)
    loop.reconcile()
    assert client.verbs().count("patch_status") == 1
    assert client.job["status"]["conditions"][0]["status"] == "False"  # Created=False says why, now


def test_a_fault_and_a_terminal_status_are_never_held_back():
    running = {"phase": "Running", "startTime": T0.isoformat(), "members": [{"attempt": 0, "indexes": "0-1"}],
               "conditions": [{"type": "Created", "status": "True", "reason": R.WORKERS_CREATED},
                              {"type": "Running", "status": "True", "reason": R.ALL_WORKERS_RUNNING}],
               "workers": {"desired": 2, "active": 2, "ready": 2}}
    for pods, phase in (([now_wk(0), now_wk(1, state=State.FAILED, exit_code=1)], "Restarting"),
                        ([now_wk(0, state=State.SUCCEEDED, exit_code=0), now_wk(1, state=State.SUCCEEDED, exit_code=0)],
                         "Succeeded")):
        client, clock = FakeClient(merge(BASE, {"status": running})), Clock()
        loop = loop_with(client, pods, clock)
        loop.backend.status_written_at = clock.now  # a write a moment ago: the tally would have to wait
        loop.reconcile()
        assert client.job["status"]["phase"] == phase
        assert client.verbs().count("patch_status") == 1
