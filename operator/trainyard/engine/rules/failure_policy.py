"""spec.failurePolicy: what a fault of the current gang leads to. A disruption restarts without
spending the budget; a retryable failure restarts (the gang, or one worker) after the backoff;
anything else fails the job with the fault's own reason.

The root cause is found by meaning, not by the order exits are observed: a disruption explains
everything after it; a worker that failed because the gang broke under it (trainyard-launch's
peer-lost exit) is a consequence, so the engine waits a moment for the worker that started it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ...api import Phase, RestartPolicy, RestartScope
from ...api import reasons as R
from ..decision import Decision, Finish, Outcome, Stop
from ..faults import Fault, root_cause
from ..plan import WARNING
from ..workers import State, Worker
from .run_policy import hang
from .scaling import created

# How long a node may be NotReady (or Unknown) before its workers count as lost. The node
# lifecycle controller already waits node-monitor-grace-period (40-50 s) before saying so; this
# adds a little for a kubelet that comes back at once, far below the 5-minute taint eviction.
NODE_LOST_GRACE_SECONDS = 30
# How long a consequence (a peer-lost exit) waits for the failure that caused it to be observed.
ROOT_CAUSE_GRACE_SECONDS = 10


def lost_on_node(d: Decision, w: Worker) -> Worker | None:
    """The worker as lost, once its node has been unready for longer than the grace."""
    if w.node_unready_since is None or not w.active:
        return None
    expiry = w.node_unready_since + timedelta(seconds=NODE_LOST_GRACE_SECONDS)
    if d.now < expiry:
        d.wake_at(expiry)
        return None
    return replace(w, state=State.FAILED, ready=False, disruption=R.NODE_LOST, reason=R.NODE_LOST,
                   message=f"node {w.node} has not been Ready since {w.node_unready_since.isoformat()}")


def faults(d: Decision) -> list[Worker]:
    out = []
    for w in d.gang.members.values():
        lost = lost_on_node(d, w)
        if lost is not None:
            out.append(lost)
        elif w.failed:
            out.append(w)
    return out


def on_fault(d: Decision) -> Outcome:
    failed = faults(d)
    causes = [w for w in failed if not w.peer_lost]
    if failed and not causes:
        first = min((w.finished_at for w in failed if w.finished_at), default=None)
        if first is not None and d.now < first + timedelta(seconds=ROOT_CAUSE_GRACE_SECONDS):
            d.wake_at(first + timedelta(seconds=ROOT_CAUSE_GRACE_SECONDS))
            return Stop()  # the worker that broke the gang is about to be seen
    fault = root_cause(causes or failed) if failed else hang(d)
    if fault is None:
        return None
    st, fp = d.status, d.spec.failure_policy
    what = fault.describe()
    if fault.disruption:
        st.disruptions += 1
        restart(d, fault, fault.disruption, f"{what}; restarting (not counted)", 0.0)
        return created(d) or Stop()
    if not fault.peer_lost and not fp.is_retryable(fault.exit_code, fault.oom, fault.hung):
        return Finish(False, *_not_retryable(d, fault, what))
    if fault.peer_lost and fp.restart_policy == RestartPolicy.NEVER:
        return Finish(False, R.RENDEZVOUS_FAILED, what + "; spec.failurePolicy.restartPolicy is Never")
    if st.restarts >= fp.backoff_limit:
        return Finish(False, R.BACKOFF_LIMIT_EXCEEDED,
                      f"{what}; spec.failurePolicy.backoffLimit={fp.backoff_limit} restarts used up")
    st.restarts += 1
    reason = (R.HUNG if fault.hung else R.OOM_KILLED if fault.oom else R.RENDEZVOUS_FAILED if fault.peer_lost
              else R.WORKER_FAILED)
    restart(d, fault, reason, f"{what}; restart {st.restarts} of {fp.backoff_limit}", fp.backoff_delay(st.restarts))
    return created(d) or Stop()


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
        # The others keep running and re-rendezvous with the replacement under the same id; the
        # failed pod stays for its logs but is no longer a member, so it is never counted again.
        d.launch(fault.index, st.attempt)
        return
    st.rendezvous_attempt = st.attempt
    d.delete([w for w in [*d.gang.members.values(), *d.gang.surplus] if w.active])
    d.roster.clear()
    if delay > 0:
        st.backoff_until = d.now + timedelta(seconds=delay)
        d.wake_at(st.backoff_until)
    else:
        for i in range(spec.desired_workers):
            d.launch(i, st.attempt)
