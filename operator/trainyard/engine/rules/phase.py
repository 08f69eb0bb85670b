"""The phase of a gang that is neither failing nor stuck: Running once every worker runs."""

from __future__ import annotations

from ...api import Phase
from ...api import reasons as R
from ..decision import Decision, Outcome, Stop
from ..plan import NORMAL
from ..workers import State


def running(d: Decision) -> Outcome:
    """Running means training: where the backend sees training progress (the local runtime reads
    the trainer's progress lines), a gang whose pods are up but that has not trained yet is still
    starting; where it cannot (a plain Kubernetes pod), Running means every worker's pod runs."""
    st, desired, members = d.status, d.spec.desired_workers, d.gang.members
    up = sum(w.state in (State.RUNNING, State.SUCCEEDED) for w in members.values())
    if len(members) == desired and up == desired:
        seen = [w.training for w in members.values() if w.training is not None]
        if seen and not any(seen):
            st.message = f"all {desired} workers are up; waiting for the first training step"
            d.condition(R.RUNNING, False, R.WAITING_FOR_TRAINING, st.message)
            return Stop()
        if st.phase != Phase.RUNNING:
            d.event(NORMAL, R.ALL_WORKERS_RUNNING, f"all {desired} workers are running")
        st.phase = Phase.RUNNING
        st.message = f"{desired} workers {'training' if seen else 'running'}"
        d.condition(R.RUNNING, True, R.ALL_WORKERS_RUNNING, st.message)
        d.condition(R.RESTARTING, False, R.ALL_WORKERS_RUNNING, st.message)
        return Stop()
    created = st.condition(R.CREATED)
    if created is not None and created.status == "False":
        return Stop()  # the refusal's own message says why
    st.message = f"waiting for {desired - up} of {desired} workers to start"
    if st.phase != Phase.RUNNING:  # a running job that scales up keeps running meanwhile
        d.condition(R.RUNNING, False, R.WORKERS_PENDING, st.message)
    return Stop()
