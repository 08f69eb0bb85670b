"""status.progress: built by the engine from rank 0's report in the job's Lease, written at most
every PROGRESS_WRITE_SECONDS, kept (stale) across a gang restart, and "resumed at step 300 after
restart 1" once the new gang reports."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.api.progress import LauncherStart
from trainyard.engine import decide
from trainyard.engine.progress import PROGRESS_WRITE_SECONDS, progress_of, progress_text
from trainyard.engine.workers import State

from .conftest import T0, at, lease, make_job, report, then, wk

RUNNING = {"phase": "Running", "startTime": T0.isoformat(),
           "conditions": [{"type": "Created", "status": "True", "reason": "WorkersCreated"},
                          {"type": "Running", "status": "True", "reason": "AllWorkersRunning"}]}
GANG = [wk(0, started_at=T0), wk(1, started_at=T0)]


@pytest.mark.parametrize(("rep", "rendezvous", "want"), [
    # 340 of 460 at 2 steps/s: 60 s left
    (report(340, at(100), total_steps=460, steps_per_second=2.0, loss=0.341234, samples_per_second=1534.24,
            start_step=300, checkpoint_step=300, checkpoint_time=at(80), metrics={"accuracy": 0.91234567}), 0,
     {"step": 340, "total_steps": 460, "percent": 73.9, "loss": 0.3412, "samples_per_second": 1534.2,
      "last_checkpoint_step": 300, "last_checkpoint_time": at(80), "estimated_completion_time": at(160), "eta": "60s",
      "updated_at": at(100), "attempt": 0, "resumed_from_step": 300, "stale": None, "metrics": {"accuracy": 0.912346},
      "observed_at": None}),
    # no rate yet (the first report), no total: no ETA, no percentage
    (report(5, at(10), total_steps=100), 0, {"percent": 5.0, "eta": None, "estimated_completion_time": None}),
    (report(5, at(10), steps_per_second=1.0), 0, {"percent": None, "eta": None}),
    # done: at the total, the ETA is now
    (report(460, at(200), total_steps=460, steps_per_second=2.0), 0,
     {"percent": 100.0, "eta": "0s", "estimated_completion_time": at(200)}),
    # a report of an earlier gang: kept, stale, no ETA; a start from 0 is no resume
    (report(340, at(100), total_steps=460, steps_per_second=2.0, start_step=0), 1,
     {"stale": True, "eta": None, "estimated_completion_time": None, "resumed_from_step": None, "percent": 73.9}),
    # hours left, in kubectl's duration format
    (report(1000, at(0), total_steps=100000, steps_per_second=5.0), 0, {"eta": "5h30m"}),
], ids=["all-fields", "no-rate", "no-total", "done", "stale", "hours"])
def test_progress_of_a_report(rep, rendezvous, want):
    got = progress_of(rep, rendezvous).model_dump()
    assert {k: got[k] for k in want} == want


def test_a_report_becomes_status_progress_at_once_then_at_most_every_30_seconds():
    job = make_job(status=RUNNING)
    first = decide(job, GANG, at(10), [lease(report(10, at(10), total_steps=100))])
    assert (first.status.progress.step, first.status.progress.observed_at) == (10, at(10))
    job = then(job, first)
    # 10 s later a newer step: held back, and the engine looks again when it may be written
    held = decide(job, GANG, at(20), [lease(report(20, at(20), total_steps=100))])
    assert held.status == job.status and held.requeue_after == 20.0
    # due: written
    due = decide(job, GANG, at(40), [lease(report(40, at(40), total_steps=100))])
    assert (due.status.progress.step, due.status.progress.observed_at) == (40, at(40))
    # an unchanged report writes nothing
    assert decide(then(job, due), GANG, at(100), [lease(report(40, at(40), total_steps=100))]).status == \
        then(job, due).status


def test_progress_rides_along_when_the_status_is_written_anyway():
    job = then(make_job(status=RUNNING), decide(make_job(status=RUNNING), GANG, at(10), [lease(report(10, at(10)))]))
    done = decide(job, [wk(0, state=State.SUCCEEDED, exit_code=0), wk(1, state=State.SUCCEEDED, exit_code=0)], at(15),
                  [lease(report(25, at(14), total_steps=25))])
    assert done.status.phase == Phase.SUCCEEDED
    assert (done.status.progress.step, done.status.progress.percent) == (25, 100.0)  # the final step, not held back


def test_status_writes_per_job_stay_bounded():
    """Rank 0 reports every second for 10 minutes and every report wakes a reconcile: status.progress
    changes 20 times (at 1 s, then every 30 s): 2 added status writes per job-minute."""
    job = make_job(status=RUNNING)
    writes = 0
    for t in range(1, 601):
        plan = decide(job, GANG, at(t), [lease(report(t * 3, at(t), total_steps=3000, steps_per_second=3.0))])
        if plan.status != job.status:
            writes += 1
            job = then(job, plan)
    assert writes == 600 // PROGRESS_WRITE_SECONDS == 20


def test_after_a_hung_restart_the_last_step_stays_stale_until_the_new_gang_resumes():
    spec = {"runPolicy": {"progressDeadlineSeconds": 30}}
    job = make_job(spec, RUNNING)
    children = [lease(report(340, at(60), total_steps=460, steps_per_second=2.0))]
    job = then(job, decide(job, GANG, at(60), children))
    assert job.status.progress.eta == "60s"
    hung = decide(job, GANG, at(91), children)
    st = hung.status
    assert (st.phase, st.restarts, st.attempt) == (Phase.RESTARTING, 1, 1)
    assert st.condition(R.RESTARTING).reason == R.HUNG
    assert (st.progress.step, st.progress.stale, st.progress.eta, st.progress.attempt) == (340, True, None, 0)
    assert progress_text(st.progress, st.restarts) == (
        "step 340/460 (73.9%), from an earlier gang: the current one has not reported yet")
    job = then(job, hung)
    gang1 = [wk(0, 1, started_at=at(95)), wk(1, 1, started_at=at(96))]
    # the new gang: its launcher starts (no step yet): still stale, and the startup budget runs
    waiting = decide(job, gang1, at(100), [lease(children[0].report, LauncherStart(1, at(97)))])
    assert waiting.status.progress.stale is True
    job = then(job, waiting)
    # its trainer resumed from the checkpoint of step 300: written at once (the gang changed)
    resumed = decide(job, gang1, at(110), [lease(report(300, at(110), attempt=1, training=False, start_step=300,
                                                        total_steps=460), LauncherStart(1, at(97)))])
    p = resumed.status.progress
    assert (p.step, p.stale, p.attempt, p.resumed_from_step, p.observed_at) == (300, None, 1, 300, at(110))
    assert progress_text(p, resumed.status.restarts) == "step 300/460 (65.2%); resumed at step 300 after restart 1"


def test_the_observed_time_is_the_operators_and_the_report_time_the_trainers():
    plan = decide(make_job(status=RUNNING), GANG, at(50), [lease(report(10, at(40)))])
    assert (plan.status.progress.updated_at, plan.status.progress.observed_at) == (at(40), at(50))
    assert plan.status.progress.updated_at + timedelta(seconds=10) == plan.status.progress.observed_at
