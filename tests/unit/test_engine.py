"""Table tests for the decision engine: one test (or table) per rule, exact assertions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.engine import Launch, decide
from trainyard.engine.workers import State

from .conftest import T0, at, lease, make_job, report, then, wk


def conds(status) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def launches(attempt: int, n: int, rdzv: int | None = None, job: str = "demo") -> list[Launch]:
    return [Launch(f"{job}-{attempt}-{i}", i, attempt, attempt if rdzv is None else rdzv) for i in range(n)]


RUNNING_STATUS = {
    "phase": "Running", "startTime": T0.isoformat(),
    "conditions": [
        {"type": "Created", "status": "True", "reason": "WorkersCreated", "lastTransitionTime": T0.isoformat()},
        {"type": "Running", "status": "True", "reason": "AllWorkersRunning", "lastTransitionTime": T0.isoformat()},
    ],
}


def restarted(attempt: int = 1, restarts: int = 1, **extra) -> dict:
    restarting = {"type": "Restarting", "status": "True", "reason": "WorkerFailed", "lastTransitionTime": T0.isoformat()}
    return {**RUNNING_STATUS, "phase": "Restarting", "attempt": attempt, "rendezvousAttempt": attempt,
            "restarts": restarts, "conditions": [*RUNNING_STATUS["conditions"], restarting], **extra}


# --- creation and the happy path ---------------------------------------------------------------


def test_new_job_creates_every_worker_of_attempt_0():
    plan = decide(make_job(), [], T0)
    assert plan.create == launches(0, 2)
    assert plan.delete == []
    st = plan.status
    assert (st.phase, st.attempt, st.restarts, st.start_time) == (Phase.PENDING, 0, 0, T0)
    assert conds(st) == {"Created": ("True", R.WORKERS_CREATED), "Running": ("False", R.WORKERS_PENDING)}
    assert plan.events == []  # the Created condition records it (engine.writes: one write fewer)
    assert st.workers.model_dump() == {"desired": 2, "active": 0, "ready": 0, "succeeded": 0, "failed": 0}
    assert plan.requeue_after is None


def test_rerun_after_creation_creates_nothing_and_changes_nothing():
    first = decide(make_job(), [], T0)
    job = then(make_job(), first)
    plan = decide(job, [wk(0, state=State.PENDING), wk(1, state=State.PENDING)], at(1))
    assert plan.create == [] and plan.delete == [] and plan.events == []
    assert plan.status.model_dump() == {**first.status.model_dump(),
                                        "workers": {"desired": 2, "active": 2, "ready": 0, "succeeded": 0, "failed": 0}}


def test_a_decision_before_the_first_status_write_adopts_the_pods_and_keeps_their_times():
    # The first status may wait for the gang to run (engine.writes): the next decision sees the
    # pods, not a status. It creates nothing, and the times are the pods', not its own.
    pods = [wk(0, state=State.PENDING, created_at=at(1)), wk(1, state=State.PENDING, created_at=at(2))]
    plan = decide(make_job(), pods, at(3))
    assert plan.create == [] and plan.delete == [] and plan.events == []
    st = plan.status
    assert (st.phase, st.start_time, st.condition("Created").last_transition_time) == (Phase.PENDING, at(1), at(1))
    running = decide(make_job(), [wk(0, created_at=at(1)), wk(1, created_at=at(2))], at(4))
    assert running.status.phase == Phase.RUNNING and running.status.start_time == at(1)
    assert [e.reason for e in running.events] == [R.ALL_WORKERS_RUNNING]


def test_all_workers_running_makes_the_job_running():
    job = make_job(status={"phase": "Pending", "startTime": T0.isoformat()})
    plan = decide(job, [wk(0), wk(1)], at(2))
    assert plan.status.phase == Phase.RUNNING
    assert conds(plan.status)["Running"] == ("True", R.ALL_WORKERS_RUNNING)
    assert [e.reason for e in plan.events] == [R.ALL_WORKERS_RUNNING]
    assert plan.status.workers.ready == 2


def test_every_worker_exited_0_is_success():
    plan = decide(make_job(status=RUNNING_STATUS), [wk(0, state=State.SUCCEEDED), wk(1, state=State.SUCCEEDED)], at(9))
    st = plan.status
    assert (st.phase, st.completion_time) == (Phase.SUCCEEDED, at(9))
    assert conds(st)["Succeeded"] == ("True", R.ALL_WORKERS_SUCCEEDED)
    assert conds(st)["Running"] == ("False", R.ALL_WORKERS_SUCCEEDED)
    assert plan.delete == []


def test_one_worker_done_while_another_runs_is_not_success():
    plan = decide(make_job(status=RUNNING_STATUS), [wk(0, state=State.SUCCEEDED), wk(1)], at(9))
    assert plan.status.phase == Phase.RUNNING
    assert plan.status.completion_time is None


def test_one_success_and_one_failure_is_a_failure_not_success():
    plan = decide(make_job(status=RUNNING_STATUS),
                  [wk(0, state=State.SUCCEEDED), wk(1, state=State.FAILED, exit_code=143)], at(9))
    assert plan.status.phase == Phase.RESTARTING
    assert plan.status.restarts == 1


# --- failures under each policy -----------------------------------------------------------------


def test_retryable_failure_restarts_the_whole_gang_at_once():
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=1, reason="Error")]
    plan = decide(make_job(status=RUNNING_STATUS), workers, at(5))
    st = plan.status
    assert (st.phase, st.attempt, st.rendezvous_attempt, st.restarts, st.disruptions) == (Phase.RESTARTING, 1, 1, 1, 0)
    assert plan.delete == ["demo-0-0"]  # the failed pod stays for its logs
    assert plan.create == launches(1, 2)  # first restart: no backoff
    assert conds(st)["Restarting"] == ("True", R.WORKER_FAILED)
    assert st.message == "worker 1 (pod demo-0-1) exited with code 1 (Error); restart 1 of 3"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", R.WORKER_FAILED)]


def test_second_restart_waits_for_the_exponential_backoff():
    workers = [wk(0, attempt=1, state=State.FAILED, exit_code=1), wk(1, attempt=1)]
    plan = decide(make_job(status=restarted()), workers, at(20))
    st = plan.status
    assert (st.attempt, st.restarts, st.backoff_until) == (2, 2, at(30))
    assert plan.create == []
    assert plan.delete == ["demo-1-1"]
    assert plan.requeue_after == 10.0

    waiting = then(make_job(status=restarted()), plan)
    old = [wk(0, attempt=1, state=State.FAILED, exit_code=1)]
    early = decide(waiting, old, at(25))
    assert (early.create, early.requeue_after, early.status.backoff_until) == ([], 5.0, at(30))
    due = decide(waiting, old, at(30))
    assert due.create == launches(2, 2)
    assert due.status.backoff_until is None


@pytest.mark.parametrize(
    ("restart", "base", "cap", "delay"),
    [(1, 10, 300, 0), (2, 10, 300, 10), (3, 10, 300, 20), (4, 10, 300, 40), (9, 10, 300, 300), (5, 0, 300, 0)],
)
def test_backoff_delay_is_immediate_then_exponential_and_capped(restart, base, cap, delay):
    job = make_job({"failurePolicy": {"backoffSeconds": base, "maxBackoffSeconds": cap}})
    assert job.spec.failure_policy.backoff_delay(restart) == delay


@pytest.mark.parametrize(
    ("policy", "codes", "exit_code", "oom", "outcome"),
    [
        ("OnFailure", None, 1, False, "restart"),
        ("OnFailure", None, 137, True, "restart"),
        ("Never", None, 143, False, R.WORKER_FAILED),
        ("ExitCode", None, 1, False, R.NON_RETRYABLE_EXIT_CODE),
        ("ExitCode", None, 127, False, R.NON_RETRYABLE_EXIT_CODE),
        ("ExitCode", None, 143, False, "restart"),
        ("ExitCode", None, 128, False, "restart"),
        ("ExitCode", None, 137, True, R.OOM_KILLED),
        ("ExitCode", [3], 3, False, "restart"),
        ("ExitCode", [3], 143, False, R.NON_RETRYABLE_EXIT_CODE),
    ],
)
def test_restart_policy_table(policy, codes, exit_code, oom, outcome):
    fp = {"restartPolicy": policy} | ({"retryableExitCodes": codes} if codes else {})
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=exit_code, oom=oom)]
    plan = decide(make_job({"failurePolicy": fp}, RUNNING_STATUS), workers, at(5))
    if outcome == "restart":
        assert (plan.status.phase, plan.status.restarts, plan.status.attempt) == (Phase.RESTARTING, 1, 1)
        assert len(plan.create) == 2
    else:
        assert plan.status.phase == Phase.FAILED
        assert conds(plan.status)["Failed"] == ("True", outcome)
        assert plan.create == []
        assert plan.delete == ["demo-0-0"]  # cleanPodPolicy Running: the survivor goes, the failed pod stays
        assert plan.status.restarts == 0


def test_oom_kill_says_what_to_do():
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=137, oom=True, reason="OOMKilled")]
    plan = decide(make_job({"failurePolicy": {"restartPolicy": "ExitCode"}}, RUNNING_STATUS), workers, at(5))
    assert plan.status.message == ("worker 1 (pod demo-0-1) was OOM-killed (exit code 137); raise the trainer "
                                   "container's memory limit or lower the batch size")


def test_oom_under_on_failure_restarts_with_its_own_reason():
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=137, oom=True)]
    plan = decide(make_job(status=RUNNING_STATUS), workers, at(5))
    assert conds(plan.status)["Restarting"] == ("True", R.OOM_KILLED)


def test_exhausted_backoff_limit_fails_and_stops_the_survivors():
    workers = [wk(0, attempt=3), wk(1, attempt=3, state=State.FAILED, exit_code=143)]
    plan = decide(make_job(status=restarted(attempt=3, restarts=3)), workers, at(50))
    st = plan.status
    assert (st.phase, st.restarts, st.attempt) == (Phase.FAILED, 3, 3)
    assert conds(st)["Failed"] == ("True", R.BACKOFF_LIMIT_EXCEEDED)
    assert st.message == ("worker 1 (pod demo-3-1) exited with code 143; spec.failurePolicy.backoffLimit=3 "
                          "restarts used up")
    assert plan.delete == ["demo-3-0"]
    assert conds(st)["Restarting"] == ("False", R.BACKOFF_LIMIT_EXCEEDED)


def test_backoff_limit_zero_fails_on_the_first_failure():
    workers = [wk(0, state=State.FAILED, exit_code=143), wk(1)]
    plan = decide(make_job({"failurePolicy": {"backoffLimit": 0}}, RUNNING_STATUS), workers, at(5))
    assert conds(plan.status)["Failed"] == ("True", R.BACKOFF_LIMIT_EXCEEDED)


# --- disruptions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("worker_kw", "reason"),
    [
        ({"state": State.FAILED, "disruption": R.EVICTED, "reason": R.EVICTED}, R.EVICTED),
        ({"state": State.FAILED, "disruption": R.NODE_LOST, "reason": R.NODE_LOST}, R.NODE_LOST),
        ({"state": State.VANISHED, "disruption": R.POD_DELETED, "reason": R.POD_DELETED}, R.POD_DELETED),
    ],
)
def test_disruptions_restart_without_spending_the_budget(worker_kw, reason):
    job = make_job({"failurePolicy": {"backoffLimit": 0}}, {**RUNNING_STATUS, "restarts": 0})
    plan = decide(job, [wk(0), wk(1, **worker_kw)], at(5))
    st = plan.status
    assert (st.phase, st.restarts, st.disruptions, st.attempt) == (Phase.RESTARTING, 0, 1, 1)
    assert plan.create == launches(1, 2)
    assert plan.delete == ["demo-0-0"]
    assert conds(st)["Restarting"] == ("True", reason)


def test_disruption_after_restarts_is_still_immediate():
    workers = [wk(0, attempt=2), wk(1, attempt=2, state=State.FAILED, disruption=R.EVICTED)]
    plan = decide(make_job(status=restarted(attempt=2, restarts=2)), workers, at(5))
    assert plan.status.backoff_until is None
    assert plan.create == launches(3, 2)


def test_a_disruption_explains_the_peers_failures():
    workers = [wk(0, state=State.FAILED, exit_code=1, finished_at=at(1)),
               wk(1, state=State.FAILED, disruption=R.NODE_LOST, finished_at=at(3))]
    plan = decide(make_job(status=RUNNING_STATUS), workers, at(5))
    assert (plan.status.restarts, plan.status.disruptions) == (0, 1)


def test_the_earliest_failure_is_the_root_cause():
    workers = [wk(0, state=State.FAILED, exit_code=1, finished_at=at(3)),
               wk(1, state=State.FAILED, exit_code=137, oom=True, finished_at=at(1))]
    plan = decide(make_job({"failurePolicy": {"restartPolicy": "ExitCode"}}, RUNNING_STATUS), workers, at(5))
    assert conds(plan.status)["Failed"] == ("True", R.OOM_KILLED)


# --- stuck workers -------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "Unschedulable"])
def test_stuck_worker_is_reported_then_fails_at_the_startup_deadline(reason):
    job = make_job({"runPolicy": {"startupDeadlineSeconds": 60}}, {"phase": "Pending", "startTime": T0.isoformat()})
    workers = [wk(0), wk(1, state=State.PENDING, reason=reason, message="details")]
    early = decide(job, workers, at(20))
    assert early.status.phase == Phase.PENDING
    assert conds(early.status)["Running"] == ("False", reason)
    assert early.requeue_after == 40.0
    assert [(e.type, e.reason) for e in early.events] == ([] if reason == "Unschedulable" else [("Warning", reason)])
    again = decide(then(job, early), workers, at(30))
    assert again.events == []  # reported once, not on every reconcile
    late = decide(job, workers, at(60))
    assert late.status.phase == Phase.FAILED
    assert conds(late.status)["Failed"] == ("True", reason)
    assert late.status.message == (f"worker 1 (pod demo-0-1) could not start: {reason}: details "
                                   "(for more than spec.runPolicy.startupDeadlineSeconds=60)")
    assert late.delete == ["demo-0-0", "demo-0-1"]


def test_invalid_image_name_fails_at_once():
    workers = [wk(0, state=State.PENDING, reason="InvalidImageName")]
    plan = decide(make_job({"workers": 1}, {"phase": "Pending", "startTime": T0.isoformat()}), workers, at(1))
    assert conds(plan.status)["Failed"] == ("True", "InvalidImageName")


# --- run policy ----------------------------------------------------------------------------------


def test_active_deadline():
    job = make_job({"runPolicy": {"activeDeadlineSeconds": 100}}, RUNNING_STATUS)
    before = decide(job, [wk(0), wk(1)], at(40))
    assert before.requeue_after == 60.0 and before.status.phase == Phase.RUNNING
    after = decide(job, [wk(0), wk(1)], at(100))
    assert conds(after.status)["Failed"] == ("True", R.DEADLINE_EXCEEDED)
    assert after.delete == ["demo-0-0", "demo-0-1"]


def test_ttl_after_finished_deletes_the_job():
    done = {**RUNNING_STATUS, "phase": "Succeeded", "completionTime": at(10).isoformat()}
    job = make_job({"runPolicy": {"ttlSecondsAfterFinished": 30}}, done)
    assert decide(job, [], at(20)).requeue_after == 20.0
    assert decide(job, [], at(20)).delete_job is False
    assert decide(job, [], at(40)).delete_job is True


@pytest.mark.parametrize(("policy", "deleted"), [
    ("Running", ["demo-0-0"]),
    ("All", ["demo-0-0", "demo-0-1", "demo-0-2"]),
    ("None", []),
])
def test_clean_pod_policy_when_the_job_fails(policy, deleted):
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=1), wk(2, state=State.SUCCEEDED)]
    job = make_job({"workers": 3, "runPolicy": {"cleanPodPolicy": policy},
                    "failurePolicy": {"restartPolicy": "Never"}}, RUNNING_STATUS)
    plan = decide(job, workers, at(5))
    assert plan.status.phase == Phase.FAILED
    assert plan.delete == deleted


def test_finished_job_keeps_applying_its_clean_pod_policy():
    done = {**RUNNING_STATUS, "phase": "Failed", "completionTime": at(10).isoformat()}
    plan = decide(make_job(status=done), [wk(0), wk(1, state=State.FAILED, exit_code=1)], at(20))
    assert plan.delete == ["demo-0-0"]
    assert plan.create == [] and plan.events == []


def test_suspend_deletes_workers_and_resume_starts_a_fresh_attempt_without_counting():
    job = make_job({"runPolicy": {"suspend": True}}, {**RUNNING_STATUS, "restarts": 1, "attempt": 1,
                                                      "rendezvousAttempt": 1})
    plan = decide(job, [wk(0, attempt=1), wk(1, attempt=1)], at(10))
    st = plan.status
    assert (st.phase, st.attempt, st.restarts) == (Phase.SUSPENDED, 2, 1)
    assert plan.delete == ["demo-1-0", "demo-1-1"]
    assert plan.create == []
    assert conds(st)["Suspended"] == ("True", R.JOB_SUSPENDED)

    again = decide(then(job, plan), [], at(11))
    assert again.status.attempt == 2 and again.events == []

    resumed = decide(then(job, plan, {"runPolicy": {"suspend": False}}), [], at(50))
    rs = resumed.status
    assert (rs.phase, rs.attempt, rs.restarts, rs.start_time) == (Phase.PENDING, 2, 1, at(50))
    assert resumed.create == launches(2, 2)
    assert conds(rs)["Suspended"] == ("False", R.JOB_RESUMED)


def test_a_job_created_suspended_creates_nothing():
    plan = decide(make_job({"runPolicy": {"suspend": True}}), [], T0)
    assert plan.status.phase == Phase.SUSPENDED and plan.create == [] and plan.status.attempt == 0


# --- elastic ---------------------------------------------------------------------------------------

ELASTIC = {"workers": 3, "elastic": {"minWorkers": 2, "maxWorkers": 4}}


def test_scale_up_adds_only_the_new_indices():
    plan = decide(make_job(ELASTIC, RUNNING_STATUS), [wk(0), wk(1)], at(5))
    assert plan.create == [Launch("demo-0-2", 2, 0, 0)]
    assert plan.delete == []
    assert [e.reason for e in plan.events] == [R.SCALED]
    assert plan.status.phase == Phase.RUNNING  # the job keeps running while the new worker starts


def test_scale_down_removes_the_highest_indices():
    plan = decide(make_job({**ELASTIC, "workers": 2}, RUNNING_STATUS), [wk(0), wk(1), wk(2)], at(5))
    assert plan.create == []
    assert plan.delete == ["demo-0-2"]
    assert plan.status.restarts == 0 and plan.status.disruptions == 0


def test_elastic_default_is_max_workers():
    plan = decide(make_job({"workers": None, "elastic": {"minWorkers": 1, "maxWorkers": 3}}), [], T0)
    assert len(plan.create) == 3


def test_worker_scope_replaces_only_the_failed_worker():
    spec = {**ELASTIC, "failurePolicy": {"restartScope": "Worker", "inPlaceRestarts": 1}}
    workers = [wk(0), wk(1, state=State.FAILED, disruption=R.EVICTED), wk(2)]
    plan = decide(make_job(spec, RUNNING_STATUS), workers, at(5))
    st = plan.status
    assert (st.attempt, st.rendezvous_attempt, st.disruptions) == (1, 0, 1)
    assert plan.create == [Launch("demo-1-1", 1, 1, 0)]
    assert plan.delete == []
    # next time round the replacement is the current worker 1 and the old failure is history
    nxt = decide(then(make_job(spec, RUNNING_STATUS), plan),
                 workers + [wk(1, attempt=1, state=State.PENDING)], at(6))
    assert nxt.create == [] and nxt.status.disruptions == 1 and nxt.delete == []


def test_worker_scope_failure_of_worker_0_restarts_the_gang():
    spec = {**ELASTIC, "failurePolicy": {"restartScope": "Worker", "inPlaceRestarts": 1}}
    workers = [wk(0, state=State.FAILED, exit_code=143), wk(1), wk(2)]
    plan = decide(make_job(spec, RUNNING_STATUS), workers, at(5))
    assert (plan.status.attempt, plan.status.rendezvous_attempt) == (1, 1)
    assert plan.create == launches(1, 3)
    assert plan.delete == ["demo-0-1", "demo-0-2"]


# --- level-based behaviour -----------------------------------------------------------------------


def test_old_attempts_are_deleted_while_active_and_kept_when_failed():
    workers = [wk(0, attempt=0, state=State.FAILED, exit_code=1), wk(1, attempt=0),
               wk(0, attempt=1), wk(1, attempt=1)]
    plan = decide(make_job(status=restarted()), workers, at(5))
    assert plan.delete == ["demo-0-1"]
    assert plan.status.restarts == 1  # the old failure is not counted again
    assert plan.status.phase == Phase.RUNNING


def test_decide_is_deterministic():
    job = make_job(status=RUNNING_STATUS)
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=1)]
    assert decide(job, workers, at(5)) == decide(job, workers, at(5))


def test_an_externally_deleted_pod_restarts_the_gang():
    gone = wk(1).vanished()
    plan = decide(make_job(status=RUNNING_STATUS), [wk(0), gone], at(5))
    assert plan.status.disruptions == 1 and plan.create == launches(1, 2)


def test_missing_pod_before_anyone_saw_it_is_just_created():
    plan = decide(make_job(status={**RUNNING_STATUS, "phase": "Pending"}), [wk(0)], at(5))
    assert plan.create == [Launch("demo-0-1", 1, 0, 0)]
    assert plan.status.disruptions == 0


def test_invalid_spec_fails_with_the_field_named():
    plan = decide(make_job({"failurePolicy": {"restartScope": "Worker"}}), [], T0)
    assert plan.status.phase == Phase.FAILED
    assert conds(plan.status)["Failed"] == ("True", R.INVALID_SPEC)
    assert "spec.failurePolicy.restartScope" in plan.status.message


def test_a_job_being_deleted_is_left_to_garbage_collection():
    job = make_job(status=RUNNING_STATUS, deletionTimestamp=(T0 + timedelta(seconds=1)).isoformat())
    plan = decide(job, [wk(0), wk(1, state=State.FAILED, exit_code=1)], at(5))
    assert plan.create == [] and plan.delete == [] and plan.status == job.status


# --- hang detection --------------------------------------------------------------------------------


def test_exit_86_from_the_launcher_watchdog_restarts_the_gang_as_hung():
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=86, hung=True, message="Hung: no training progress for 60 s")]
    plan = decide(make_job({"failurePolicy": {"restartPolicy": "ExitCode"}}, RUNNING_STATUS), workers, at(5))
    assert (plan.status.phase, plan.status.restarts, plan.status.attempt) == (Phase.RESTARTING, 1, 1)
    assert conds(plan.status)["Restarting"] == ("True", R.HUNG)


def test_no_step_reported_within_the_progress_deadline_restarts_the_gang():
    job = make_job({"runPolicy": {"progressDeadlineSeconds": 30}}, RUNNING_STATUS)
    workers = [wk(0, started_at=T0), wk(1, started_at=T0)]
    children = [lease(report(120, at(20)))]
    ok = decide(job, workers, at(45), children)
    assert ok.status.phase == Phase.RUNNING and ok.create == []
    assert ok.requeue_after == 5.0  # looks again when the newest report would expire
    hung = decide(job, workers, at(50), children)
    st = hung.status
    assert (st.phase, st.restarts, st.attempt) == (Phase.RESTARTING, 1, 1)
    assert conds(st)["Restarting"] == ("True", R.HUNG)
    assert st.message == ("worker 0 (pod demo-0-0) made no training progress: no training step reported for 30s since "
                          "step 120 (spec.runPolicy.progressDeadlineSeconds=30); restart 1 of 3")
    assert hung.delete == ["demo-0-0", "demo-0-1"] and hung.create == launches(1, 2)
    # the last known step stays, marked stale, until the new gang reports
    assert (st.progress.step, st.progress.stale, st.progress.eta) == (120, True, None)


def test_no_report_of_the_gang_never_means_hung():
    job = make_job({"runPolicy": {"progressDeadlineSeconds": 30}}, RUNNING_STATUS)
    assert decide(job, [wk(0), wk(1)], at(5000)).status.phase == Phase.RUNNING
    old_gang = [lease(report(120, at(20), attempt=0))]
    job1 = make_job({"runPolicy": {"progressDeadlineSeconds": 30}},
                    {**RUNNING_STATUS, "attempt": 1, "rendezvousAttempt": 1})
    assert decide(job1, [wk(0, attempt=1), wk(1, attempt=1)], at(5000), old_gang).status.phase == Phase.RUNNING


def test_hung_under_never_fails_with_reason_hung():
    job = make_job({"runPolicy": {"progressDeadlineSeconds": 30}, "failurePolicy": {"restartPolicy": "Never"}},
                   RUNNING_STATUS)
    plan = decide(job, [wk(0), wk(1)], at(31), [lease(report(5, T0))])
    assert conds(plan.status)["Failed"] == ("True", R.HUNG)


def test_a_local_sigkill_is_a_retryable_signal_not_an_oom():
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=137, oom=False, reason="Killed")]
    plan = decide(make_job({"failurePolicy": {"restartPolicy": "ExitCode"}}, RUNNING_STATUS), workers, at(5))
    assert plan.status.phase == Phase.RESTARTING


def test_pods_of_a_lost_decision_are_kept_and_found_again():
    # The operator created attempt 1 but crashed before its status write landed: the engine makes
    # the same decision again, counts it once, and does not delete the pods it will re-create.
    workers = [wk(0), wk(1, state=State.FAILED, exit_code=1), wk(0, attempt=1, state=State.PENDING),
               wk(1, attempt=1, state=State.PENDING)]
    plan = decide(make_job(status=RUNNING_STATUS), workers, at(5))
    assert (plan.status.attempt, plan.status.restarts) == (1, 1)
    assert plan.delete == ["demo-0-0"]
    assert plan.create == launches(1, 2)  # idempotent: they exist, the create is a no-op (409)
