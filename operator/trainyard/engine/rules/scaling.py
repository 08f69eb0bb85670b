"""The gang's size: old gangs go, missing workers are created (after any backoff), surplus ones
(a scale-down) are deleted, and a creation the apiserver refuses is reported, retried with a
backoff, and fails the job at once (an invalid pod) or at the startup deadline (quota, admission)."""

from __future__ import annotations

from datetime import timedelta

from ...api import reasons as R
from ...api.names import worker_name
from ..decision import Decision, Finish, Outcome, Stop
from ..plan import NORMAL, WARNING
from ..refusals import reason as refusal_reason
from ..workers import Refusal


def superseded(d: Decision) -> Outcome:
    """Old gangs never linger: their pods are deleted as soon as they are superseded (failed ones
    are kept for their logs)."""
    d.delete([w for w in d.gang.superseded if w.active])
    return None


def backoff(d: Decision) -> Outcome:
    st = d.status
    if st.backoff_until is not None and d.now < st.backoff_until:
        d.wake_at(st.backoff_until)
        return Stop()
    st.backoff_until = None
    return None


def scale(d: Decision) -> Outcome:
    st, members, surplus = d.status, d.gang.members, d.gang.surplus
    desired = d.spec.desired_workers
    active_surplus = [w for w in surplus if w.active]
    if active_surplus:
        d.delete(active_surplus)
        # Later members get a fresh attempt, so no pod name is ever reused: a re-created worker
        # never collides with the deleted one that may still be terminating.
        st.attempt += 1
    for w in surplus:
        d.roster.pop(w.index, None)
    fresh = not any(w.exists for w in members.values())
    missing = [i for i in range(desired) if i not in members or not members[i].exists]
    for i in missing:
        d.launch(i, members[i].attempt if i in members else st.attempt)
    if d.plan.create and not fresh or active_surplus:
        d.event(NORMAL, R.SCALED, f"scaled to {desired} workers")
    return created(d)


def created(d: Decision) -> Outcome:
    """Created is True once every worker's pod exists (or is being created now); a refusal says why not."""
    desired = d.spec.desired_workers
    waiting = sorted(i for i, m in d.roster.items() if i < desired and not m.created)
    refused: list[tuple[str, Refusal]] = []
    for i in waiting:
        name = worker_name(d.job.metadata.name, d.roster[i].attempt, i)
        if (r := d.refusals.get(name)) is not None:
            refused.append((f"pod {name} (worker {i})", r))
    refused += [(f"{c.kind.lower() if c.kind == 'Service' else 'claim'} {c.name}", c.refusal)
                for c in d.children if c.refusal is not None]
    if refused:
        return _refused(d, refused, waiting)
    if all(i in d.roster and d.roster[i].created for i in range(desired)):
        # No event: the condition records it, with its time, and an event per gang would be one
        # more API write per job (engine.writes). Restarts and refusals post their own.
        d.condition(R.CREATED, True, R.WORKERS_CREATED, f"{desired} workers created", at=d.first_pod_created_at())
    return None


def _refused(d: Decision, refused: list[tuple[str, Refusal]], waiting: list[int]) -> Outcome:
    what, first = refused[0]
    kind = "PersistentVolumeClaim" if what.startswith("claim ") else "Pod"
    reason = refusal_reason(first, kind)
    told = f"the apiserver refused {what}: {first.message}"
    if first.permanent:
        return Finish(False, reason, f"{told}; fix the job's spec")
    limit = d.spec.run_policy.startup_deadline_seconds
    cond = d.status.condition(R.CREATED)
    since = min([r.first_at for _, r in refused]
                + ([cond.last_transition_time] if cond and cond.status == "False" and cond.reason == reason
                   and cond.last_transition_time else []))
    expiry = since + timedelta(seconds=limit)
    if d.now >= expiry:
        return Finish(False, reason, f"{told} (for more than spec.runPolicy.startupDeadlineSeconds={limit})")
    others = f" and {len(refused) - 1} more" if len(refused) > 1 else ""
    message = (f"{told}{others}; {len(waiting)} worker(s) not created, retrying; the job fails after "
               f"spec.runPolicy.startupDeadlineSeconds={limit}")
    if cond is None or cond.reason != reason or cond.status != "False":
        d.event(WARNING, reason, message)  # once per cause, not on every retry
    d.condition(R.CREATED, False, reason, message)
    d.status.message = message
    d.wake_at(expiry)
    return None

