"""The phase of a gang that is neither failing nor stuck: Running once every worker runs."""

from __future__ import annotations

from ...api import Phase
from ...api import reasons as R
from ..decision import Decision, Outcome, Stop
from ..plan import NORMAL
from ..workers import State


def running(d: Decision) -> Outcome:
    st, desired, members = d.status, d.spec.desired_workers, d.gang.members
    up = sum(w.state in (State.RUNNING, State.SUCCEEDED) for w in members.values())
    if len(members) == desired and up == desired:
        if st.phase != Phase.RUNNING:
            d.event(NORMAL, R.ALL_WORKERS_RUNNING, f"all {desired} workers are running")
        st.phase = Phase.RUNNING
        st.message = f"{desired} workers running"
        d.condition(R.RUNNING, True, R.ALL_WORKERS_RUNNING, st.message)
        d.condition(R.RESTARTING, False, R.ALL_WORKERS_RUNNING, st.message)
    else:
        st.message = f"waiting for {desired - up} of {desired} workers to start"
        if st.phase != Phase.RUNNING:  # a running job that scales up keeps running meanwhile
            d.condition(R.RUNNING, False, R.WORKERS_PENDING, st.message)
    return Stop()
