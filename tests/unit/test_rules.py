"""Each rule of the engine on its own: given a decision in the making, its outcome (None: go on,
Stop, Finish) and what it adds to the plan. tests/unit/test_engine.py tests the table as a whole."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.api.progress import LauncherStart
from trainyard.engine.decision import Decision, Finish, Stop
from trainyard.engine.rules import RULES
from trainyard.engine.rules.failure_policy import on_fault
from trainyard.engine.rules.lifecycle import already_finished, being_deleted, invalid_spec, started
from trainyard.engine.rules.phase import running
from trainyard.engine.rules.run_policy import active_deadline, hang
from trainyard.engine.rules.scaling import backoff, scale, superseded
from trainyard.engine.rules.startup_policy import stuck_workers
from trainyard.engine.rules.success_policy import all_succeeded
from trainyard.engine.rules.suspend_policy import resumed, suspended
from trainyard.engine.workers import State

from .conftest import T0, at, lease, make_job, report, wk

PENDING = {"phase": "Pending", "startTime": T0.isoformat()}
RUNNING = {"phase": "Running", "startTime": T0.isoformat()}


def decision(spec=None, status=None, workers=(), now=T0, **meta) -> Decision:
    return Decision.start(make_job(spec, status, **meta), list(workers), now)


def test_the_table_is_in_its_documented_order():
    assert [r.__name__ for r in RULES] == [
        "being_deleted", "already_finished", "invalid_spec", "suspended", "resumed", "queued", "started",
        "active_deadline",
        "superseded", "on_fault", "backoff", "scale", "all_succeeded", "stuck_workers", "running"]


@pytest.mark.parametrize(("meta", "outcome"), [({}, None), ({"deletionTimestamp": T0.isoformat()}, Stop(count=False))])
def test_being_deleted(meta, outcome):
    d = decision(status=RUNNING, **meta)
    assert being_deleted(d) == outcome
    if outcome:
        assert d.status is d.job.status


@pytest.mark.parametrize(("phase", "policy", "outcome", "deleted"), [
    ("Running", "Running", None, []),
    ("Succeeded", "Running", Stop(), ["demo-0-0"]),
    ("Failed", "All", Stop(), ["demo-0-0", "demo-0-1"]),
    ("Failed", "None", Stop(), []),
])
def test_already_finished(phase, policy, outcome, deleted):
    d = decision({"runPolicy": {"cleanPodPolicy": policy}}, {"phase": phase, "completionTime": T0.isoformat()},
                 [wk(0), wk(1, state=State.FAILED, exit_code=1)])
    assert already_finished(d) == outcome
    assert d.plan.delete == deleted


def test_already_finished_deletes_the_job_at_its_ttl():
    spec = {"runPolicy": {"ttlSecondsAfterFinished": 30}}
    status = {"phase": "Succeeded", "completionTime": T0.isoformat()}
    early = decision(spec, status, now=at(10))
    already_finished(early)
    assert (early.plan.delete_job, early.plan.requeue_after) == (False, 20.0)
    late = decision(spec, status, now=at(30))
    already_finished(late)
    assert late.plan.delete_job


@pytest.mark.parametrize(("spec", "outcome"), [
    ({}, None),
    ({"workers": 5, "elastic": {"minWorkers": 1, "maxWorkers": 3}},
     Finish(False, R.INVALID_SPEC, "spec.workers: Invalid value: spec.workers must lie within spec.elastic.minWorkers "
                                   "and spec.elastic.maxWorkers (1 to 3); 5 was asked for")),
])
def test_invalid_spec(spec, outcome):
    assert invalid_spec(decision(spec)) == outcome


@pytest.mark.parametrize(("suspend", "phase", "outcome", "attempt"), [
    (False, "Running", None, 0),
    (True, "Running", Stop(count=False), 1),  # the gang's rendezvous is closed: a new one on resume
    (True, "Suspended", Stop(count=False), 0),
])
def test_suspended(suspend, phase, outcome, attempt):
    d = decision({"runPolicy": {"suspend": suspend}}, {"phase": phase}, [wk(0), wk(1)])
    assert suspended(d) == outcome
    assert d.status.attempt == attempt
    if outcome:
        assert d.plan.delete == ["demo-0-0", "demo-0-1"] and d.status.phase == Phase.SUSPENDED


@pytest.mark.parametrize(("phase", "new_phase", "events"), [("Suspended", Phase.PENDING, [R.JOB_RESUMED]),
                                                            ("Running", Phase.RUNNING, [])])
def test_resumed(phase, new_phase, events):
    d = decision(status={"phase": phase}, now=at(5))
    assert resumed(d) is None
    assert d.status.phase == new_phase and [e.reason for e in d.plan.events] == events


def test_started_sets_the_start_once():
    d = decision(now=at(3))
    assert started(d) is None and (d.status.phase, d.status.start_time) == (Phase.PENDING, at(3))
    d = decision(status=RUNNING, now=at(3))
    started(d)
    assert (d.status.phase, d.status.start_time) == (Phase.RUNNING, T0)


@pytest.mark.parametrize(("now", "outcome", "requeue"), [
    (at(5), None, 5.0),
    (at(10), Finish(False, R.DEADLINE_EXCEEDED, "the job ran longer than spec.runPolicy.activeDeadlineSeconds=10"),
     None),
])
def test_active_deadline(now, outcome, requeue):
    d = decision({"runPolicy": {"activeDeadlineSeconds": 10}}, RUNNING, now=now)
    assert active_deadline(d) == outcome
    assert d.plan.requeue_after == requeue


def test_superseded_deletes_old_live_pods_and_keeps_failed_ones():
    d = decision(status={**RUNNING, "attempt": 1, "rendezvousAttempt": 1},
                 workers=[wk(0), wk(1, state=State.FAILED, exit_code=1), wk(0, attempt=1), wk(1, attempt=1),
                          wk(0, attempt=2)])
    assert superseded(d) is None
    assert d.plan.delete == ["demo-0-0"]  # attempt 2 comes from a lost status write: left alone


@pytest.mark.parametrize(("workers", "status", "outcome_type", "restarts", "disruptions"), [
    ([wk(0), wk(1)], RUNNING, type(None), 0, 0),
    ([wk(0), wk(1, state=State.FAILED, exit_code=1)], RUNNING, Stop, 1, 0),
    ([wk(0), wk(1, state=State.FAILED, disruption=R.EVICTED)], RUNNING, Stop, 0, 1),
    ([wk(0), wk(1, state=State.FAILED, exit_code=1)], {**RUNNING, "restarts": 3}, Finish, 3, 0),
])
def test_on_fault(workers, status, outcome_type, restarts, disruptions):
    d = decision(status=status, workers=workers, now=at(5))
    assert type(on_fault(d)) is outcome_type
    assert (d.status.restarts, d.status.disruptions) == (restarts, disruptions)


HANG = {"runPolicy": {"progressDeadlineSeconds": 30, "firstProgressDeadlineSeconds": 120}}
GANG = [wk(0, started_at=T0), wk(1, started_at=at(10))]  # the gang is complete at 10 s
HUNG_STEADY = "no training step reported for 30s since step 310 (spec.runPolicy.progressDeadlineSeconds=30)"


def hung_at_start(idle: int, began: str = "the gang started", budget: str = "spec.runPolicy."
                  "firstProgressDeadlineSeconds=120") -> str:
    return f"no training step reported within {idle}s after {began} (the startup budget: {budget})"


@pytest.mark.parametrize(("spec", "status", "workers", "child", "now", "message", "requeue"), [
    # no deadline, a worker not running yet, or nothing of this gang in the Lease: never hung
    ({}, RUNNING, GANG, lease(report(310, T0)), at(5000), None, None),
    (HANG, RUNNING, [GANG[0], wk(1, state=State.PENDING)], lease(report(310, T0)), at(5000), None, None),
    (HANG, RUNNING, GANG, None, at(5000), None, None),
    (HANG, {**RUNNING, "attempt": 1, "rendezvousAttempt": 1}, [wk(0, 1, started_at=T0), wk(1, 1, started_at=T0)],
     lease(report(310, T0, attempt=0), LauncherStart(0, T0)), at(5000), None, None),
    # startup: worker 0's launcher started, no step yet: the budget counts from the gang's last start
    (HANG, RUNNING, GANG, lease(launcher=LauncherStart(0, at(5))), at(100), None, 30.0),
    (HANG, RUNNING, GANG, lease(launcher=LauncherStart(0, at(5))), at(130), hung_at_start(120), None),
    # a trainer (re)started at step 300 (its start report): the budget counts from then
    (HANG, RUNNING, GANG, lease(report(300, at(50), training=False)), at(160), None, 10.0),
    (HANG, RUNNING, GANG, lease(report(300, at(50), training=False)), at(170),
     hung_at_start(120, "its trainer (re)started at step 300"), None),
    # steady state: a step within the deadline, then none
    (HANG, RUNNING, GANG, lease(report(310, at(60))), at(85), None, 5.0),
    (HANG, RUNNING, GANG, lease(report(310, at(60))), at(90), HUNG_STEADY, None),
    # a worker that started after the last step (a replacement joining): the startup budget again
    (HANG, {**RUNNING, "attempt": 1}, [wk(0, started_at=T0), wk(1, 1, started_at=at(200))],
     lease(report(310, at(150))), at(300), None, 20.0),
    # unset, the startup budget is the progress deadline but at least 600 s
    ({"runPolicy": {"progressDeadlineSeconds": 30}}, RUNNING, GANG, lease(launcher=LauncherStart(0, T0)), at(609),
     None, 1.0),
    ({"runPolicy": {"progressDeadlineSeconds": 30}}, RUNNING, GANG, lease(launcher=LauncherStart(0, T0)), at(610),
     hung_at_start(600, budget="600s, the default of spec.runPolicy.firstProgressDeadlineSeconds"), None),
    ({"runPolicy": {"progressDeadlineSeconds": 900}}, RUNNING, GANG, lease(launcher=LauncherStart(0, T0)), at(905),
     None, 5.0),
], ids=["no-deadline", "not-all-running", "no-lease", "older-gang-only", "startup", "startup-exceeded",
        "restarted-trainer", "restarted-trainer-exceeded", "steady", "steady-exceeded", "replacement-joined",
        "default-budget", "default-budget-exceeded", "default-budget-is-the-deadline"])
def test_hang_is_judged_from_the_lease(spec, status, workers, child, now, message, requeue):
    d = Decision.start(make_job(spec, status), workers, now, [child] if child else [])
    fault = hang(d)
    assert (fault.message if fault else None) == message
    if fault:
        assert fault.hung and fault.index == 0
    assert d.plan.requeue_after == requeue


@pytest.mark.parametrize(("until", "outcome", "cleared"), [(at(10), Stop(), False), (at(5), None, True)])
def test_backoff(until, outcome, cleared):
    d = decision(status={**RUNNING, "backoffUntil": until.isoformat()}, now=at(5))
    assert backoff(d) == outcome
    assert (d.status.backoff_until is None) == cleared


@pytest.mark.parametrize(("workers", "spec", "create", "delete", "events"), [
    ([], {}, ["demo-0-0", "demo-0-1"], [], []),  # the Created condition says so; no event (engine.writes)
    ([wk(0)], {}, ["demo-0-1"], [], [R.SCALED]),
    ([wk(0), wk(1), wk(2)], {}, [], ["demo-0-2"], [R.SCALED]),
    ([wk(0), wk(1)], {}, [], [], []),
])
def test_scale(workers, spec, create, delete, events):
    d = decision(spec, RUNNING, workers)
    assert scale(d) is None
    assert ([launch.name for launch in d.plan.create], d.plan.delete, [e.reason for e in d.plan.events]) == (
        create, delete, events)


@pytest.mark.parametrize(("states", "finished"), [
    ([State.SUCCEEDED, State.SUCCEEDED], True), ([State.SUCCEEDED, State.RUNNING], False), ([State.SUCCEEDED], False)])
def test_all_succeeded(states, finished):
    d = decision(status=RUNNING, workers=[wk(i, state=s) for i, s in enumerate(states)])
    assert (all_succeeded(d) is not None) == finished


@pytest.mark.parametrize(("reason", "now", "outcome_type"), [
    ("", at(1), type(None)),
    ("ImagePullBackOff", at(1), Stop),
    ("ImagePullBackOff", at(600), Finish),
    ("InvalidImageName", at(1), Finish),  # never heals: fails at once
])
def test_stuck_workers(reason, now, outcome_type):
    d = decision(status=PENDING, workers=[wk(0), wk(1, state=State.PENDING, reason=reason)], now=now)
    assert type(stuck_workers(d)) is outcome_type


@pytest.mark.parametrize(("states", "phase", "message"), [
    ([State.RUNNING, State.RUNNING], Phase.RUNNING, "2 workers running"),
    ([State.RUNNING, State.PENDING], Phase.PENDING, "waiting for 1 of 2 workers to start"),
])
def test_running(states, phase, message):
    d = decision(status=PENDING, workers=[wk(i, state=s) for i, s in enumerate(states)])
    assert running(d) == Stop()
    assert (d.status.phase, d.status.message) == (phase, message)


def test_a_decision_never_changes_the_job_it_was_given():
    job = make_job(status=RUNNING)
    before = job.model_dump()
    d = Decision.start(job, [wk(0), wk(1, state=State.FAILED, exit_code=1)], at(5) + timedelta(0))
    on_fault(d)
    assert job.model_dump() == before


@pytest.mark.parametrize(("mode", "warm"), [(None, False), ("Cold", False), ("Warm", True)])
def test_a_gang_restart_asks_for_warm_workers_only_under_restart_mode_warm(mode, warm):
    """restartMode Warm marks every launch of the restarted gang warm (the backend hands it to a
    spare if it has one ready); the attempt, the rendezvous and the restart count are the same."""
    spec = {"failurePolicy": {"restartMode": mode}} if mode else {}
    d = decision(spec, RUNNING, [wk(0), wk(1, state=State.FAILED, exit_code=137, finished_at=T0)])
    assert type(on_fault(d)) is Stop
    assert d.status.restarts == 1 and d.status.attempt == 1 and d.status.rendezvous_attempt == 1
    assert [(c.index, c.attempt, c.rendezvous_attempt, c.warm) for c in d.plan.create] == [(0, 1, 1, warm), (1, 1, 1, warm)]
