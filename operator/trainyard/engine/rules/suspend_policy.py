"""spec.runPolicy.suspend: delete the workers and pause; resuming is not a restart."""

from __future__ import annotations

from ...api import Phase, WorkerCounts
from ...api import reasons as R
from ..decision import Decision, Outcome, Stop
from ..plan import NORMAL


def suspended(d: Decision) -> Outcome:
    if not d.spec.run_policy.suspend:
        return None
    st = d.status
    if st.phase != Phase.SUSPENDED:
        st.phase = Phase.SUSPENDED
        st.backoff_until = None
        st.message = "suspended"
        d.condition(R.SUSPENDED, True, R.JOB_SUSPENDED, "spec.runPolicy.suspend is true")
        d.condition(R.RUNNING, False, R.JOB_SUSPENDED, "the job is suspended")
        d.condition(R.RESTARTING, False, R.JOB_SUSPENDED, "the job is suspended")
        d.event(NORMAL, R.JOB_SUSPENDED, "the job is suspended: its workers are deleted")
        if d.gang.members or d.gang.surplus:
            # The suspended gang's rendezvous is closed; resuming needs a fresh one.
            st.attempt += 1
            st.rendezvous_attempt = st.attempt
    d.delete([w for w in d.workers if w.active])
    d.roster.clear()
    st.workers = WorkerCounts(desired=d.spec.desired_workers)
    return Stop(count=False)


def resumed(d: Decision) -> Outcome:
    st = d.status
    if st.phase == Phase.SUSPENDED:
        st.phase = Phase.PENDING
        st.start_time = d.now
        d.condition(R.SUSPENDED, False, R.JOB_RESUMED, "the job was resumed")
        d.event(NORMAL, R.JOB_RESUMED, "the job was resumed")
    return None
