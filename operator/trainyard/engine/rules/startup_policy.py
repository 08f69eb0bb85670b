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
    pending = sorted((w for w in d.gang.members.values() if w.state == State.PENDING and w.exists),
                     key=lambda w: w.index)
    if not pending:
        return None
    claim = d.child("PersistentVolumeClaim")
    why_claim = (f"; claim {claim.name} is {claim.phase}" + (f": {claim.message}" if claim.message else "")
                 if claim is not None and claim.phase and claim.phase != "Bound" else "")
    for w in pending:
        expiry = (w.created_at or d.now) + timedelta(seconds=limit)
        if w.reason in R.PERMANENT_STUCK_REASONS:
            return Finish(False, w.reason, f"worker {w.index} (pod {w.name}) could not start: {w.reason}"
                          + (f": {w.message}" if w.message else ""))
        if d.now >= expiry:
            if not w.reason:  # nothing says why: no scheduler took it, or its containers never started
                return Finish(False, R.STARTUP_DEADLINE_EXCEEDED,
                              f"worker {w.index} (pod {w.name}) is still Pending after "
                              f"spec.runPolicy.startupDeadlineSeconds={limit}{why_claim}")
            return Finish(False, w.reason, f"worker {w.index} (pod {w.name}) could not start: {w.reason}"
                          + (f": {w.message}" if w.message else "") + why_claim
                          + f" (for more than spec.runPolicy.startupDeadlineSeconds={limit})")
        d.wake_at(expiry)
    stuck = [w for w in pending if w.reason]
    if not stuck:
        return None
    w = stuck[0]
    msg = (f"worker {w.index} (pod {w.name}) cannot start: {w.reason}" + (f": {w.message}" if w.message else "")
           + why_claim + f"; the job fails after spec.runPolicy.startupDeadlineSeconds={limit}")
    running = d.status.condition(R.RUNNING)
    # Unschedulable is often brief (a volume binding, an autoscaler adding a node) and the
    # scheduler already reports it on the pod: only the condition says it, until the deadline.
    if (running is None or running.reason != w.reason) and w.reason != R.UNSCHEDULABLE:
        d.event(WARNING, w.reason, msg)
    d.status.message = msg
    d.condition(R.RUNNING, False, w.reason, msg)
    return Stop()
