"""The gang's size: old gangs go, missing workers are created (after any backoff), surplus ones
(a scale-down) are deleted."""

from __future__ import annotations

from ...api import reasons as R
from ..decision import Decision, Outcome, Stop
from ..plan import NORMAL


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
    missing = [i for i in range(desired) if i not in members]
    for i in missing:
        d.launch(i, st.attempt)
    d.delete([w for w in surplus if w.active])
    if missing and members or surplus and any(w.active for w in surplus):
        d.event(NORMAL, R.SCALED, f"scaled to {desired} workers")
    if missing and not members:
        what = "created" if st.attempt == 0 else f"created for attempt {st.attempt}"
        d.event(NORMAL, R.WORKERS_CREATED, f"{desired} workers {what}")
        d.condition(R.CREATED, True, R.WORKERS_CREATED, f"{desired} workers created")
    return None
