"""Faults seen at once and counted exactly (issue 11), decided by the engine from the status's
members: a table test for every repro, each failing on the engine before the members roster."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.engine import Launch, decide
from trainyard.engine.rules.failure_policy import NODE_LOST_GRACE_SECONDS, ROOT_CAUSE_GRACE_SECONDS
from trainyard.engine.workers import Refusal, State

from .conftest import T0, at, make_job, then, wk

ELASTIC = {"workers": 3, "elastic": {"minWorkers": 2, "maxWorkers": 3}}


def running(members: list[dict], **extra) -> dict:
    return {"phase": "Running", "startTime": T0.isoformat(), "members": members,
            "conditions": [{"type": "Created", "status": "True", "reason": "WorkersCreated"},
                           {"type": "Running", "status": "True", "reason": "AllWorkersRunning"}], **extra}


def members(attempt: int, indexes: str, created: bool = True) -> dict:
    return {"attempt": attempt, "indexes": indexes, "created": created}


def test_a_new_gang_is_recorded_as_the_members():
    plan = decide(make_job(), [], T0)
    assert [m.model_dump() for m in plan.status.members] == [{"attempt": 0, "indexes": "0-1", "created": True}]


def test_a_member_deleted_while_the_operator_was_down_is_a_disruption_with_a_new_rendezvous():
    """Repro 4: SIGKILL the operator, force-delete worker 1's pod, start the operator."""
    plan = decide(make_job(status=running([members(0, "0-1")])), [wk(0)], at(5))
    st = plan.status
    assert (st.disruptions, st.restarts, st.attempt, st.rendezvous_attempt) == (1, 0, 1, 1)
    assert plan.create == [Launch("demo-1-0", 0, 1, 1), Launch("demo-1-1", 1, 1, 1)]
    assert plan.delete == ["demo-0-0"]
    assert st.message == "worker 1 (pod demo-0-1) was disrupted: PodDeleted: pod demo-0-1 was deleted; restarting " \
                         "(not counted)"


def test_a_worker_deleted_right_after_its_creation_is_a_disruption_at_once():
    """Repro 1: the pod was created (it is a member) and is gone before the watch settled."""
    first = decide(make_job({"workers": 8}), [], T0)
    job = then(make_job({"workers": 8}), first)
    plan = decide(job, [wk(i, state=State.PENDING) for i in range(7)], at(1))  # demo-0-7 gone
    assert (plan.status.disruptions, plan.status.attempt) == (1, 1)


@pytest.mark.parametrize("retries", [1, 2, 5])
def test_worker_scope_counts_one_failure_once_while_its_replacement_is_refused(retries):
    """Repro 2: 3 workers elastic 2..3, a quota of 2 pods, one pod fails once with exit 1."""
    spec = {**ELASTIC, "failurePolicy": {"restartScope": "Worker", "backoffLimit": 3, "inPlaceRestarts": 1}}
    job = make_job(spec, running([members(0, "0-2")]))
    failed = wk(1, state=State.FAILED, exit_code=1, finished_at=at(1))
    plan = decide(job, [wk(0), failed, wk(2)], at(2))
    assert (plan.status.restarts, plan.create) == (1, [Launch("demo-1-1", 1, 1, 0)])
    # The apiserver refuses the replacement: the backend decides again with the refusal known.
    refusal = Refusal(403, "Forbidden", "exceeded quota: q", at(2), at(2))
    refused = wk(1, attempt=1, state=State.PENDING, exists=False, refusal=refusal)
    again = decide(job, [wk(0), failed, wk(2), refused], at(2))
    assert (again.status.restarts, again.create) == (1, [])  # retried after its backoff, not at once
    assert [m.model_dump() for m in again.status.members] == [
        {"attempt": 0, "indexes": "0,2", "created": True}, {"attempt": 1, "indexes": "1", "created": False}]
    assert again.status.condition(R.CREATED).reason == R.QUOTA_EXCEEDED
    job = then(job, again)
    now = at(2)
    for n in range(retries):
        r = Refusal(403, "Forbidden", "exceeded quota: q", at(2), now, count=1 + n)
        now += timedelta(seconds=61)  # past any retry backoff (at most 60 s)
        refused = wk(1, attempt=1, state=State.PENDING, exists=False, refusal=r)
        due = decide(job, [wk(0), failed, wk(2), refused], now)
        assert (due.status.restarts, due.create) == (1, [Launch("demo-1-1", 1, 1, 0)]), "counted again"
        # refused once more: decided again with that refusal, and that status is the one written
        r = Refusal(403, "Forbidden", "exceeded quota: q", at(2), now, count=2 + n)
        again = decide(job, [wk(0), failed, wk(2), wk(1, attempt=1, state=State.PENDING, exists=False, refusal=r)],
                       now)
        assert (again.status.restarts, again.create) == (1, [])
        job = then(job, again)
    created = decide(job, [wk(0), failed, wk(2), wk(1, attempt=1, state=State.PENDING)], now)  # the quota freed
    assert created.status.restarts == 1 and created.status.condition(R.CREATED).status == "True"


def test_a_restart_whose_status_write_was_lost_is_decided_once():
    """The operator dies between creating the new gang and writing the status: nothing doubles."""
    job = make_job(status=running([members(0, "0-1")]))
    failed = wk(1, state=State.FAILED, exit_code=1, finished_at=at(1))
    first = decide(job, [wk(0), failed], at(2))
    assert first.status.restarts == 1
    # the new pods exist, the status still says attempt 0: the same decision again
    again = decide(job, [wk(0), failed, wk(0, attempt=1, state=State.PENDING), wk(1, attempt=1, state=State.PENDING)],
                   at(3))
    assert (again.status.restarts, again.status.attempt) == (1, 1)
    assert again.create == first.create  # re-sent creates answer 409 and are adopted


def test_scaling_down_and_up_while_the_removed_worker_terminates_is_no_disruption():
    """Repros 3 and 5: scale 4 -> 3 -> 4; the re-created worker never reuses a name."""
    spec = {"workers": 4, "elastic": {"minWorkers": 2, "maxWorkers": 4}}
    job = make_job(spec, running([members(0, "0-3")]))
    down = decide(then(job, decide(job, [wk(i) for i in range(4)], at(1)), {"workers": 3}),
                  [wk(i) for i in range(4)], at(2))
    assert (down.delete, down.status.attempt, down.status.rendezvous_attempt) == (["demo-0-3"], 1, 0)
    job = then(then(job, down), None, {"workers": 4}) if False else then(make_job(spec, running([members(0, "0-3")])),
                                                                        down)
    terminating = wk(3, state=State.FAILED, disruption=R.POD_DELETED)  # deletionTimestamp set, still there
    up = decide(job, [wk(0), wk(1), wk(2), terminating], at(3))
    assert up.create == [Launch("demo-1-3", 3, 1, 0)]
    assert (up.status.disruptions, up.status.restarts, up.status.rendezvous_attempt) == (0, 0, 0)
    assert up.delete == []


def test_suspend_and_resume_leave_no_worker_of_the_old_gang():
    job = make_job({"runPolicy": {"suspend": True}}, running([members(0, "0-1")]))
    plan = decide(job, [wk(0), wk(1)], at(1))
    assert plan.delete == ["demo-0-0", "demo-0-1"] and plan.status.members == []
    resumed = decide(then(job, plan, {"runPolicy": {"suspend": False}}), [wk(0), wk(1)], at(2))
    assert [launch.name for launch in resumed.create] == ["demo-1-0", "demo-1-1"]
    assert resumed.delete == ["demo-0-0", "demo-0-1"]  # still there: told again


def test_a_finished_job_counts_what_is_left_after_its_cleanup():
    """Repro 7: READY 1 after its pod was deleted."""
    done = {"phase": "Failed", "completionTime": T0.isoformat(), "members": [members(0, "0-1")],
            "workers": {"desired": 2, "active": 1, "ready": 1, "succeeded": 0, "failed": 1}}
    job = make_job(status=done)
    plan = decide(job, [wk(0), wk(1, state=State.FAILED, exit_code=1)], at(1))
    assert plan.delete == ["demo-0-0"]
    assert (plan.status.workers.active, plan.status.workers.ready) == (0, 0)
    after = decide(then(job, plan), [wk(1, state=State.FAILED, exit_code=1)], at(2))
    assert (after.status.workers.active, after.status.workers.ready, after.status.workers.failed) == (0, 0, 1)
    # CI saw this: the next decision came while the deleted pod still terminated (deletionTimestamp
    # set, no exit code); the clean-up's own deletion is not a second failure.
    terminating = wk(0, state=State.FAILED, disruption=R.POD_DELETED, reason=R.POD_DELETED)
    racing = decide(then(job, plan), [terminating, wk(1, state=State.FAILED, exit_code=1)], at(2))
    assert (racing.status.workers.active, racing.status.workers.failed) == (0, 1)
    # On a real node the clean-up's SIGTERM ends the trainer with 143: still not a failure of the job's
    sigterm = wk(0, state=State.FAILED, exit_code=143, reason="Error")
    killed = decide(then(job, plan), [sigterm, wk(1, state=State.FAILED, exit_code=1)], at(2))
    assert (killed.status.workers.active, killed.status.workers.failed) == (0, 1)


@pytest.mark.parametrize(("unready_for", "lost"), [(NODE_LOST_GRACE_SECONDS - 1, False),
                                                   (NODE_LOST_GRACE_SECONDS, True)])
def test_a_node_not_ready_for_longer_than_the_grace_loses_its_workers(unready_for, lost):
    job = make_job(status=running([members(0, "0-1")]))
    now = at(100)
    w1 = wk(1, node="n1", node_unready_since=now - timedelta(seconds=unready_for))
    plan = decide(job, [wk(0, node="n0"), w1], now)
    assert (plan.status.disruptions == 1) == lost
    if lost:
        assert plan.status.condition(R.RESTARTING).reason == R.NODE_LOST
    else:
        assert plan.requeue_after == 1.0


@pytest.mark.parametrize("policy", ["ExitCode", "OnFailure"])
def test_the_root_cause_is_the_worker_that_broke_the_gang_not_the_first_exit_seen(policy):
    """Repro 9: worker 0 (it hosts the rendezvous) is SIGKILLed; the survivor exits first with the
    launcher's peer-lost code. The decision waits for the cause and names it."""
    job = make_job({"failurePolicy": {"restartPolicy": policy}}, running([members(0, "0-1")]))
    survivor = wk(1, state=State.FAILED, exit_code=87, finished_at=at(1))
    early = decide(job, [wk(0), survivor], at(2))
    assert (early.status.restarts, early.create, early.requeue_after) == (0, [], ROOT_CAUSE_GRACE_SECONDS - 1)
    killed = wk(0, state=State.FAILED, exit_code=137, reason="Error", finished_at=at(1.5))
    plan = decide(job, [killed, survivor], at(3))
    assert plan.status.phase == Phase.RESTARTING and plan.status.restarts == 1
    assert plan.status.message.startswith("worker 0 (pod demo-0-0) exited with code 137")


def test_a_peer_lost_exit_alone_is_a_retryable_rendezvous_failure():
    job = make_job({"failurePolicy": {"restartPolicy": "ExitCode"}}, running([members(0, "0-1")]))
    lone = wk(1, state=State.FAILED, exit_code=87, finished_at=at(1))
    plan = decide(job, [wk(0), lone], at(1 + ROOT_CAUSE_GRACE_SECONDS))
    assert plan.status.condition(R.RESTARTING).reason == R.RENDEZVOUS_FAILED and plan.status.restarts == 1
    never = make_job({"failurePolicy": {"restartPolicy": "Never"}}, running([members(0, "0-1")]))
    assert decide(never, [wk(0), lone], at(20)).status.condition(R.FAILED).reason == R.RENDEZVOUS_FAILED


def test_running_means_training_where_the_backend_can_tell():
    """Repro 10: after a restart the local workers are up long before they train."""
    job = make_job(status={**running([members(1, "0-1")]), "phase": "Restarting", "attempt": 1,
                           "rendezvousAttempt": 1})
    up = [wk(0, attempt=1, training=False), wk(1, attempt=1, training=False)]
    plan = decide(job, up, at(1))
    assert plan.status.phase == Phase.RESTARTING
    assert plan.status.condition(R.RUNNING).reason == R.WAITING_FOR_TRAINING
    training = decide(job, [wk(0, attempt=1, training=True), wk(1, attempt=1, training=False)], at(2))
    assert training.status.phase == Phase.RUNNING and training.status.message == "2 workers training"
    unknown = decide(job, [wk(0, attempt=1), wk(1, attempt=1)], at(2))  # a Kubernetes pod: it cannot tell
    assert unknown.status.phase == Phase.RUNNING and unknown.status.message == "2 workers running"


def test_a_pending_worker_with_no_reason_still_fails_at_the_startup_deadline():
    """A schedulerName no scheduler serves: the pod stays Pending with no condition at all."""
    job = make_job({"runPolicy": {"startupDeadlineSeconds": 60}}, {**running([members(0, "0-1")]),
                                                                    "phase": "Pending"})
    quiet = [wk(0, state=State.PENDING), wk(1, state=State.PENDING)]
    assert decide(job, quiet, at(30)).requeue_after == 30.0
    late = decide(job, quiet, at(60))
    assert late.status.condition(R.FAILED).reason == R.STARTUP_DEADLINE_EXCEEDED
    assert late.status.message == "worker 0 (pod demo-0-0) is still Pending after spec.runPolicy.startupDeadlineSeconds=60"


def test_an_invalid_pod_fails_the_job_at_once_naming_the_field():
    refusal = Refusal(422, "Invalid", 'Pod "demo-0-0" is invalid: spec.containers[0].image: Invalid value: " x ": '
                                      "must not have leading or trailing whitespace", T0, T0)
    first = decide(make_job(), [], T0)
    plan = decide(make_job(), [wk(0, state=State.PENDING, exists=False, refusal=refusal)], T0)
    assert first.create and plan.status.phase == Phase.FAILED
    assert plan.status.condition(R.FAILED).reason == R.INVALID_POD_TEMPLATE
    assert plan.status.message.startswith("the apiserver refused pod demo-0-0 (worker 0): Pod \"demo-0-0\" is invalid: "
                                          "spec.containers[0].image")


def test_a_quota_that_never_heals_fails_at_the_startup_deadline():
    job = make_job({"runPolicy": {"startupDeadlineSeconds": 60}})
    r = Refusal(403, "Forbidden", "exceeded quota: q", T0, at(50), count=6)
    plan = decide(job, [wk(0, state=State.PENDING), wk(1, state=State.PENDING, exists=False, refusal=r)], at(60))
    assert plan.status.condition(R.FAILED).reason == R.QUOTA_EXCEEDED
    assert "for more than spec.runPolicy.startupDeadlineSeconds=60" in plan.status.message
