"""Where the job is in its life: being deleted, already finished, invalid, starting."""

from __future__ import annotations

from ...api import Phase, semantic_errors
from ...api import reasons as R
from ...api.names import worker_selector
from ..decision import Decision, Finish, Outcome, Stop


def being_deleted(d: Decision) -> Outcome:
    """Garbage collection removes the children; the status is left as it is."""
    if d.job.metadata.deletionTimestamp is None:
        return None
    d.plan.status = d.job.status
    return Stop(count=False)


def already_finished(d: Decision) -> Outcome:
    """A finished job only applies its cleanPodPolicy and TTL."""
    if d.status.phase is None or not d.status.phase.terminal:
        return None
    d.clean_up_finished()
    return Stop()  # counts as they are after the cleanup


def invalid_spec(d: Decision) -> Outcome:
    """A spec the CRD's rules should have refused (an older CRD, a cluster without CEL)."""
    errors = semantic_errors(d.job)
    return Finish(False, R.INVALID_SPEC, "; ".join(errors)) if errors else None


def started(d: Decision) -> Outcome:
    st = d.status
    if st.start_time is None:
        st.start_time = d.first_pod_created_at() or d.now
    if st.selector is None:  # the scale subresource's labelSelectorPath (an HPA reads it)
        st.selector = worker_selector(d.job.metadata.name)
    if st.phase is None:
        st.phase = Phase.PENDING
    return None
