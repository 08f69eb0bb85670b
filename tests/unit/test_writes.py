"""The write budget: a status that changes only its tally (worker counts, messages) waits; anything a
user or a controller acts on is written in the reconcile that decided it, faults and terminal
statuses included."""

from __future__ import annotations

from datetime import UTC, datetime

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.engine import decide
from trainyard.engine.workers import State
from trainyard.engine.writes import COUNTS_INTERVAL_SECONDS, urgent
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


def now_wk(index: int, **kw):
    """A worker the loop sees (it decides at the wall clock's now): created just now."""
    return wk(index, created_at=datetime.now(UTC), **kw)


def loop_with(client: FakeClient, pods: list, clock: Clock) -> JobLoop:
    loop = JobLoop("ml", "demo", client, lambda: [(UID, w) for w in pods])
    loop.backend = KubeBackend(client, loop.indexed, loop.expectations, loop.log, clock=clock)
    return loop


def test_workers_starting_one_by_one_cost_one_write_at_creation_and_one_when_running():
    client, clock, pods = FakeClient(merge(BASE, {"spec": {"workers": 4}})), Clock(), []
    loop = loop_with(client, pods, clock)
    loop.reconcile()
    assert client.verbs().count("patch_status") == 1  # created: members, Created, Pending
    for i in range(3):  # they start one by one: only the tally changes
        pods[:] = [now_wk(j, state=State.RUNNING if j <= i else State.PENDING) for j in range(4)]
        clock.now += 1
        wait = loop.reconcile()
        assert 0 < wait <= COUNTS_INTERVAL_SECONDS - 1 - i  # it looks again when the tally is due
    assert client.verbs().count("patch_status") == 1
    assert client.job["status"]["workers"]["ready"] == 0
    pods[:] = [now_wk(j) for j in range(4)]
    clock.now += 0.5
    loop.reconcile()  # all running: a phase change, written at once with the counts
    assert client.verbs().count("patch_status") == 2
    st = client.job["status"]
    assert (st["phase"], st["workers"]["ready"]) == ("Running", 4)
    assert [c[1] for c in client.calls if c[0] == "event"] == [R.WORKERS_CREATED, R.ALL_WORKERS_RUNNING]


def test_a_waiting_tally_is_written_once_the_interval_has_passed():
    client, clock, pods = FakeClient(merge(BASE, {"spec": {"workers": 4}})), Clock(), []
    loop = loop_with(client, pods, clock)
    loop.reconcile()
    pods[:] = [now_wk(0), now_wk(1), now_wk(2, state=State.PENDING), now_wk(3, state=State.PENDING)]
    clock.now += 2
    assert loop.reconcile() == COUNTS_INTERVAL_SECONDS - 2
    assert client.verbs().count("patch_status") == 1
    clock.now += COUNTS_INTERVAL_SECONDS - 2
    loop.reconcile()
    assert client.verbs().count("patch_status") == 2
    assert client.job["status"]["workers"]["ready"] == 2
    assert client.job["status"]["message"] == "waiting for 2 of 4 workers to start"
    clock.now += 1
    assert loop.reconcile() > 590  # nothing waits: the next look is the startup deadline's
    assert client.verbs().count("patch_status") == 2


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
