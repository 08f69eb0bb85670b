"""spec.runPolicy deadlines: activeDeadlineSeconds ends the job; progressDeadlineSeconds finds a
gang that is alive but makes no progress."""

from __future__ import annotations

from datetime import timedelta

from ...api import reasons as R
from ..decision import Decision, Finish, Outcome
from ..faults import Fault
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
    """The gang is hung when every worker is running but none made progress within the deadline
    (seen through the heartbeat by backends that can; on Kubernetes the launcher exits with the
    hung exit code instead)."""
    limit = d.spec.run_policy.progress_deadline_seconds
    members = d.gang.members
    if limit is None or not members or len(members) < d.spec.desired_workers:
        return None
    if not all(w.state == State.RUNNING and w.last_progress is not None for w in members.values()):
        return None
    newest = max(w.last_progress for w in members.values())  # type: ignore[type-var]
    expiry = newest + timedelta(seconds=limit)
    if d.now < expiry:
        d.wake_at(expiry)
        return None
    first = members[min(members)]
    idle = int((d.now - newest).total_seconds())
    return Fault(first.index, first.name, hung=True,
                 message=f"no worker reported progress for {idle}s (spec.runPolicy.progressDeadlineSeconds={limit})")
