"""A job queued in Kueue (the kueue.x-k8s.io/queue-name label; the driver shows its Workload as a
child): no worker runs before the Workload is admitted; an admitted gang starts where Kueue placed
it, and keeps its admission across gang restarts (the Workload is never touched by one); an
eviction stops every worker without spending the restart budget, and the job queues again. Its
clock (status.startTime, activeDeadlineSeconds) starts at admission, as a Job's starts when Kueue
unsuspends it."""

from __future__ import annotations

from ...api import Phase
from ...api import reasons as R
from ...api.names import worker_selector
from ..decision import Decision, Outcome, Stop
from ..plan import NORMAL, WARNING


def queued(d: Decision) -> Outcome:
    wl = d.child("Workload")
    if wl is None or wl.admission is None:
        return None
    a, st = wl.admission, d.status
    admitted = st.condition(R.ADMITTED)
    if a.admitted and not a.evicted:
        if admitted is None or admitted.status != "True":
            msg = f"admitted by ClusterQueue {a.cluster_queue}" if a.cluster_queue else "admitted by Kueue"
            d.condition(R.ADMITTED, True, R.KUEUE_ADMITTED, msg)
            d.event(NORMAL, R.KUEUE_ADMITTED, msg)
        d.plan.placement = a.placement
        return None  # `started` starts its clock

    where = f"{d.job.metadata.namespace}/{a.queue}"
    if a.unavailable:
        reason = R.KUEUE_UNAVAILABLE
        msg = (f"the job asks for the Kueue queue {where} (label kueue.x-k8s.io/queue-name), and Kueue's API "
               "(workloads.kueue.x-k8s.io) is not served: it waits; install Kueue, or remove the label")
    elif a.evicted:
        reason = R.KUEUE_EVICTED
        msg = f"evicted by Kueue ({a.evicted})" + (f": {a.message}" if a.message else "") + \
              f"; waiting to be admitted again in queue {where}"
    elif admitted is not None and admitted.reason == R.KUEUE_EVICTED:
        reason, msg = R.KUEUE_EVICTED, admitted.message  # the quota is released; it queues again
    else:
        reason = R.WAITING_FOR_ADMISSION
        msg = f"waiting for Kueue admission in queue {where}" + (f": {a.message}" if a.message else "")
    if reason != R.WAITING_FOR_ADMISSION and (admitted is None or admitted.reason != reason):
        d.event(WARNING, reason, msg)
    if d.gang.members or d.gang.surplus:
        # A gang that was running: its rendezvous is closed, re-admission starts a new one. A
        # disruption: it never counts toward backoffLimit.
        st.disruptions += 1
        st.attempt += 1
        st.rendezvous_attempt = st.attempt
    d.delete([w for w in d.workers if w.active])
    d.roster.clear()
    if st.phase in (None, Phase.RUNNING, Phase.RESTARTING):
        st.phase = Phase.PENDING
    st.start_time = None
    st.backoff_until = None
    st.selector = st.selector or worker_selector(d.job.metadata.name)
    st.message = msg
    d.condition(R.ADMITTED, False, reason, msg)
    d.condition(R.RUNNING, False, reason, msg)
    if st.condition(R.RESTARTING) is not None:
        d.condition(R.RESTARTING, False, reason, msg)
    return Stop()
