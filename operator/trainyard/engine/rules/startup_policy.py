"""spec.runPolicy.startupDeadlineSeconds: a worker that cannot start (unschedulable, its image
not pulled, its config not created) is reported, and fails the job at the deadline; a reason that
never heals fails it at once."""

from __future__ import annotations

from datetime import timedelta

from ...api import reasons as R
from ..decision import Decision, Finish, Outcome, Stop
from ..plan import WARNING
from ..workers import State


def stuck_workers(d: Decision) -> Outcome:
    limit = d.spec.run_policy.startup_deadline_seconds
    stuck = sorted((w for w in d.gang.members.values() if w.state == State.PENDING and w.reason),
                   key=lambda w: w.index)
    if not stuck:
        return None
    for w in stuck:
        expiry = (w.created_at or d.now) + timedelta(seconds=limit)
        if d.now >= expiry or w.reason in R.PERMANENT_STUCK_REASONS:
            return Finish(False, w.reason,
                          f"worker {w.index} (pod {w.name}) could not start: {w.reason}"
                          + (f": {w.message}" if w.message else "")
                          + (f" (for more than spec.runPolicy.startupDeadlineSeconds={limit})"
                             if w.reason not in R.PERMANENT_STUCK_REASONS else ""))
    w = stuck[0]
    msg = (f"worker {w.index} (pod {w.name}) cannot start: {w.reason}" + (f": {w.message}" if w.message else "")
           + f"; the job fails after spec.runPolicy.startupDeadlineSeconds={limit}")
    running = d.status.condition(R.RUNNING)
    # Unschedulable is often brief (a volume binding, an autoscaler adding a node) and the
    # scheduler already reports it on the pod: only the condition says it, until the deadline.
    if (running is None or running.reason != w.reason) and w.reason != R.UNSCHEDULABLE:
        d.event(WARNING, w.reason, msg)
    d.status.message = msg
    d.condition(R.RUNNING, False, w.reason, msg)
    for s in stuck:
        d.wake_at((s.created_at or d.now) + timedelta(seconds=limit))
    return Stop()
