"""spec.runPolicy deadlines: activeDeadlineSeconds ends the job; progressDeadlineSeconds finds a
gang that is alive but makes no progress."""

from __future__ import annotations

from datetime import timedelta

from ...api import reasons as R
from ..decision import Decision, Finish, Outcome
from ..faults import Fault
from ..progress import gang_launcher, gang_report
from ..workers import State


def active_deadline(d: Decision) -> Outcome:
    deadline = d.spec.run_policy.active_deadline_seconds
    if deadline is None or d.status.start_time is None:
        return None
    expiry = d.status.start_time + timedelta(seconds=deadline)
    if d.now >= expiry:
        return Finish(False, R.DEADLINE_EXCEEDED,
                      f"the job ran longer than spec.runPolicy.activeDeadlineSeconds={deadline}")
    d.wake_at(expiry)
    return None


def hang(d: Decision) -> Fault | None:
    """The gang is hung when every worker runs and rank 0 reported no training step within the
    deadline. Fed by the job's Lease (the trainer library's reports), on both backends:

    - steady state: no step reported for progressDeadlineSeconds since the last one (its time);
    - startup: until the gang's first step, and again whenever the report says a trainer (re)started
      without a step since, the budget is firstProgressDeadlineSeconds (runPolicy.first_progress_budget),
      counted from the later of the start of the gang's last worker and that (re)start;
    - only a gang that has shown it can report is judged: a report or worker 0's launcher start of
      one of its attempts is in the Lease. Otherwise (an older trainer image, no ServiceAccount
      token, the Lease not created) trainyard-launch's own watchdog and the liveness probe remain.
    """
    rp = d.spec.run_policy
    limit, budget = rp.progress_deadline_seconds, rp.first_progress_budget
    members = d.gang.members
    if limit is None or budget is None or not members or len(members) < d.spec.desired_workers:
        return None
    if not all(w.state == State.RUNNING for w in members.values()):
        return None
    report = gang_report(d.children, d.job.status)
    launcher = gang_launcher(d.children, d.job.status)
    if report is None and launcher is None:
        return None
    starts = [t for w in members.values() for t in (w.started_at or w.created_at,) if t is not None]
    if launcher is not None:
        starts.append(launcher.time)
    start = max(starts)
    if report is not None and report.training and report.time >= start:
        expiry = report.time + timedelta(seconds=limit)
        why = (f"no training step reported for {{idle}}s since step {report.step} "
               f"(spec.runPolicy.progressDeadlineSeconds={limit})")
        since = report.time
    else:
        since = max(start, report.time) if report is not None else start
        expiry = since + timedelta(seconds=budget)
        began = (f"its trainer (re)started at step {report.step}" if report is not None and not report.training
                 else "the gang started")
        named = (f"spec.runPolicy.firstProgressDeadlineSeconds={budget}" if rp.first_progress_deadline_seconds
                 else f"{budget}s, the default of spec.runPolicy.firstProgressDeadlineSeconds")
        why = f"no training step reported within {{idle}}s after {began} (the startup budget: {named})"
    if d.now < expiry:
        d.wake_at(expiry)
        return None
    first = members[min(members)]
    return Fault(first.index, first.name, hung=True, message=why.format(idle=int((d.now - since).total_seconds())))
