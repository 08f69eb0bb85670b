"""spec.failurePolicy: what a fault of the current gang leads to. A disruption restarts without
spending the budget; a retryable failure restarts (the gang, or one worker) after the backoff;
anything else fails the job with the fault's own reason."""

from __future__ import annotations

from datetime import timedelta

from ...api import Phase, RestartPolicy, RestartScope
from ...api import reasons as R
from ..decision import Decision, Finish, Outcome, Stop
from ..faults import Fault, root_cause
from ..plan import WARNING
from .run_policy import hang


def on_fault(d: Decision) -> Outcome:
    failed = [w for w in d.gang.members.values() if w.failed]
    fault = root_cause(failed) if failed else hang(d)
    if fault is None:
        return None
    st, fp = d.status, d.spec.failure_policy
    what = fault.describe()
    if fault.disruption:
        st.disruptions += 1
        restart(d, fault, fault.disruption, f"{what}; restarting (not counted)", 0.0)
        return Stop()
    if not fp.is_retryable(fault.exit_code, fault.oom, fault.hung):
        return Finish(False, *_not_retryable(d, fault, what))
    if st.restarts >= fp.backoff_limit:
        return Finish(False, R.BACKOFF_LIMIT_EXCEEDED,
                      f"{what}; spec.failurePolicy.backoffLimit={fp.backoff_limit} restarts used up")
    st.restarts += 1
    reason = R.HUNG if fault.hung else R.OOM_KILLED if fault.oom else R.WORKER_FAILED
    restart(d, fault, reason, f"{what}; restart {st.restarts} of {fp.backoff_limit}", fp.backoff_delay(st.restarts))
    return Stop()


def _not_retryable(d: Decision, fault: Fault, what: str) -> tuple[str, str]:
    fp = d.spec.failure_policy
    if fault.hung:
        return R.HUNG, what
    if fault.oom:
        return R.OOM_KILLED, what
    if fp.restart_policy == RestartPolicy.NEVER:
        return R.WORKER_FAILED, what + "; spec.failurePolicy.restartPolicy is Never"
    if fp.retryable_exit_codes is not None:
        return R.NON_RETRYABLE_EXIT_CODE, what + " which is not in spec.failurePolicy.retryableExitCodes"
    return R.NON_RETRYABLE_EXIT_CODE, what + " which is not retryable (only signal exits 128-255 except 137 are)"


def restart(d: Decision, fault: Fault, reason: str, message: str, delay: float) -> None:
    """A new attempt: one replacement worker (Worker scope, not worker 0, which hosts the
    rendezvous), or a new gang with a new rendezvous, now or after the backoff."""
    st, spec = d.status, d.spec
    st.attempt += 1
    st.phase = Phase.RESTARTING
    st.message = message
    d.condition(R.RESTARTING, True, reason, message)
    d.condition(R.RUNNING, False, reason, message)
    d.event(WARNING, reason, message)
    if spec.failure_policy.restart_scope == RestartScope.WORKER and spec.elastic is not None and fault.index != 0:
        # The others keep running and re-rendezvous with the replacement under the same id.
        d.launch(fault.index, st.attempt)
        return
    st.rendezvous_attempt = st.attempt
    d.delete([w for w in [*d.gang.members.values(), *d.gang.surplus] if w.active])
    if delay > 0:
        st.backoff_until = d.now + timedelta(seconds=delay)
        d.wake_at(st.backoff_until)
    else:
        for i in range(spec.desired_workers):
            d.launch(i, st.attempt)
