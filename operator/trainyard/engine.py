"""The decision engine: one pure function from (job, observed workers, now) to a Plan.

No I/O happens here. The operator applies plans to pods, the local runtime to processes; both
feed back what they observe as `Worker`s. Every rule is level-based: the plan depends only on
the job (spec and the status the engine wrote last time) and what is observed now, so running
it twice on the same input gives the same plan, and re-running after a crash loses nothing.

Rules, in order:
1. A finished job only applies cleanPodPolicy and its TTL.
2. A spec that is invalid fails the job with InvalidSpec.
3. suspend deletes every worker; resuming starts a new attempt without counting a restart.
4. activeDeadlineSeconds fails the job.
5. Workers of older attempts are deleted if still active (failed ones are kept for their logs).
6. A failed worker of the current attempt: a disruption restarts without spending the budget;
   a retryable failure restarts (gang or single worker) after the backoff; anything else fails.
7. Missing workers are created (after the backoff); surplus ones (scale-down) deleted.
8. All workers succeeded: Succeeded. A worker stuck or unschedulable past the startup deadline:
   Failed with the pod's own reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from . import reasons as R
from .api import (
    CleanPodPolicy,
    Condition,
    DistributedTrainingJob,
    DistributedTrainingJobStatus,
    Phase,
    RestartPolicy,
    RestartScope,
    WorkerCounts,
    semantic_errors,
)
from .naming import worker_name
from .workers import State, Worker

NORMAL = "Normal"
WARNING = "Warning"


@dataclass(frozen=True)
class Launch:
    """A worker to start."""

    name: str
    index: int
    attempt: int
    rendezvous_attempt: int


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass
class Plan:
    status: DistributedTrainingJobStatus
    create: list[Launch] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    delete_job: bool = False

    def wake_at(self, now: datetime, when: datetime | None) -> None:
        if when is None:
            return
        delay = max(0.0, (when - now).total_seconds())
        self.requeue_after = delay if self.requeue_after is None else min(self.requeue_after, delay)


def set_condition(status: DistributedTrainingJobStatus, type_: str, true: bool, reason: str, message: str,
                  now: datetime) -> None:
    value = "True" if true else "False"
    for i, c in enumerate(status.conditions):
        if c.type == type_:
            ltt = c.last_transition_time if c.status == value else now
            status.conditions[i] = Condition(type=type_, status=value, reason=reason, message=message,
                                             last_transition_time=ltt)
            return
    if not true and type_ not in (R.RUNNING,):
        return  # a condition that never happened is absent rather than False
    status.conditions.append(Condition(type=type_, status=value, reason=reason, message=message,
                                       last_transition_time=now))


def describe(w: Worker) -> str:
    if w.disruption:
        return f"worker {w.index} (pod {w.name}) was disrupted: {w.disruption}" + (f": {w.message}" if w.message else "")
    if w.state == State.VANISHED:
        return f"worker {w.index} (pod {w.name}) was deleted"
    if w.hung:
        return f"worker {w.index} (pod {w.name}) made no training progress" + (f": {w.message}" if w.message else "")
    if w.oom:
        return (f"worker {w.index} (pod {w.name}) was OOM-killed (exit code {w.exit_code}); "
                "raise the trainer container's memory limit or lower the batch size")
    return f"worker {w.index} (pod {w.name}) exited with code {w.exit_code}" + (f" ({w.reason})" if w.reason else "")


def _root_cause(failed: list[Worker]) -> Worker:
    """The failure that started it: a disruption explains the peers' collective errors; otherwise
    the earliest to finish, since the others usually fail because it did."""
    pool = [w for w in failed if w.disruption] or failed
    far = datetime.max.replace(tzinfo=None)

    def key(w: Worker) -> tuple:
        t = w.finished_at.replace(tzinfo=None) if w.finished_at else far
        return (t, w.index)

    return min(pool, key=key)


class _Decider:
    def __init__(self, job: DistributedTrainingJob, workers: list[Worker], now: datetime):
        self.job = job
        self.spec = job.spec
        self.now = now
        self.st = job.status.model_copy(deep=True)
        self.st.observed_generation = job.metadata.generation
        self.plan = Plan(status=self.st)
        self.workers = workers

    # -- helpers ---------------------------------------------------------------------------------

    def event(self, type_: str, reason: str, message: str) -> None:
        self.plan.events.append(Event(type_, reason, message))

    def cond(self, type_: str, true: bool, reason: str, message: str) -> None:
        set_condition(self.st, type_, true, reason, message, self.now)

    def delete(self, ws: list[Worker]) -> None:
        for w in ws:
            if w.state != State.VANISHED and w.name not in self.plan.delete:
                self.plan.delete.append(w.name)

    def partition(self) -> tuple[dict[int, Worker], list[Worker]]:
        """Current worker of each index (the newest attempt since the last gang restart), and the rest."""
        current: dict[int, Worker] = {}
        for w in self.workers:
            if w.attempt < self.st.rendezvous_attempt or w.attempt > self.st.attempt:
                continue
            if w.index not in current or w.attempt > current[w.index].attempt:
                current[w.index] = w
        chosen = {id(w) for w in current.values()}
        # Pods of a later attempt come from a decision whose status write was lost: leave them be,
        # the same decision is about to be made again and will find them.
        return current, [w for w in self.workers if id(w) not in chosen and w.attempt <= self.st.attempt]

    def counts(self, members: dict[int, Worker]) -> None:
        ms = list(members.values())
        self.st.workers = WorkerCounts(
            desired=self.spec.desired_workers,
            active=sum(w.active for w in ms),
            ready=sum(w.state == State.RUNNING and w.ready for w in ms),
            succeeded=sum(w.state == State.SUCCEEDED for w in ms),
            failed=sum(w.failed for w in ms),
        )

    def finish(self, succeeded: bool, reason: str, message: str) -> Plan:
        self.st.phase = Phase.SUCCEEDED if succeeded else Phase.FAILED
        self.st.completion_time = self.now
        self.st.backoff_until = None
        self.st.message = message
        self.cond(R.SUCCEEDED if succeeded else R.FAILED, True, reason, message)
        self.cond(R.RUNNING, False, reason, message)
        self.cond(R.RESTARTING, False, reason, message)
        self.event(NORMAL if succeeded else WARNING, reason, message)
        self.plan.create.clear()
        return self.finished()

    def finished(self) -> Plan:
        policy = self.spec.run_policy.clean_pod_policy
        if policy == CleanPodPolicy.ALL:
            self.delete(self.workers)
        elif policy == CleanPodPolicy.RUNNING:
            self.delete([w for w in self.workers if w.active])
        ttl = self.spec.run_policy.ttl_seconds_after_finished
        if ttl is not None and self.st.completion_time is not None:
            expiry = self.st.completion_time + timedelta(seconds=ttl)
            if self.now >= expiry:
                self.plan.delete_job = True
            else:
                self.plan.wake_at(self.now, expiry)
        return self.plan

    def launch(self, index: int, attempt: int) -> None:
        self.plan.create.append(Launch(worker_name(self.job.metadata.name, attempt, index), index, attempt,
                                       self.st.rendezvous_attempt))

    # -- the rules -------------------------------------------------------------------------------

    def decide(self) -> Plan:
        st, spec, now = self.st, self.spec, self.now
        if self.job.metadata.deletionTimestamp is not None:
            return Plan(status=self.job.status)  # garbage collection removes the children
        if st.phase is not None and st.phase.terminal:
            return self.finished()

        errors = semantic_errors(self.job)
        if errors:
            return self.finish(False, R.INVALID_SPEC, "; ".join(errors))

        current, others = self.partition()
        if spec.run_policy.suspend:
            return self.suspend(current)
        if st.phase == Phase.SUSPENDED:
            st.phase = Phase.PENDING
            st.start_time = now
            self.cond(R.SUSPENDED, False, R.JOB_RESUMED, "the job was resumed")
            self.event(NORMAL, R.JOB_RESUMED, "the job was resumed")
        if st.start_time is None:
            st.start_time = now
        if st.phase is None:
            st.phase = Phase.PENDING

        deadline = spec.run_policy.active_deadline_seconds
        if deadline is not None:
            expiry = st.start_time + timedelta(seconds=deadline)
            if now >= expiry:
                self.counts(current)
                return self.finish(False, R.DEADLINE_EXCEEDED,
                                   f"the job ran longer than spec.runPolicy.activeDeadlineSeconds={deadline}")
            self.plan.wake_at(now, expiry)

        # Old gangs never linger: their pods are deleted as soon as they are superseded.
        self.delete([w for w in others if w.active])

        desired = spec.desired_workers
        members = {i: w for i, w in current.items() if i < desired}
        surplus = [w for i, w in current.items() if i >= desired]

        failed = [w for w in members.values() if w.failed] or self.hung(members)
        if failed:
            return self.on_failure(members, surplus, failed)

        if st.backoff_until is not None and now < st.backoff_until:
            self.counts(members)
            self.plan.wake_at(now, st.backoff_until)
            return self.plan
        st.backoff_until = None

        missing = [i for i in range(desired) if i not in members]
        for i in missing:
            self.launch(i, st.attempt)
        self.delete([w for w in surplus if w.active])
        if missing and members or surplus and any(w.active for w in surplus):
            self.event(NORMAL, R.SCALED, f"scaled to {desired} workers")
        if missing and not members:
            what = "created" if st.attempt == 0 else f"created for attempt {st.attempt}"
            self.event(NORMAL, R.WORKERS_CREATED, f"{desired} workers {what}")
            self.cond(R.CREATED, True, R.WORKERS_CREATED, f"{desired} workers created")
        self.counts(members)

        if len(members) == desired and all(w.state == State.SUCCEEDED for w in members.values()):
            return self.finish(True, R.ALL_WORKERS_SUCCEEDED, f"all {desired} workers succeeded")
        stuck = self.stuck(members)
        if stuck is None:
            return self.plan

        if len(members) == desired and all(w.state in (State.RUNNING, State.SUCCEEDED) for w in members.values()):
            if st.phase != Phase.RUNNING:
                self.event(NORMAL, R.ALL_WORKERS_RUNNING, f"all {desired} workers are running")
            st.phase = Phase.RUNNING
            st.message = f"{desired} workers running"
            self.cond(R.RUNNING, True, R.ALL_WORKERS_RUNNING, st.message)
            self.cond(R.RESTARTING, False, R.ALL_WORKERS_RUNNING, st.message)
        elif not stuck:
            waiting = desired - sum(w.state in (State.RUNNING, State.SUCCEEDED) for w in members.values())
            st.message = f"waiting for {waiting} of {desired} workers to start"
            if st.phase != Phase.RUNNING:  # a running job that scales up keeps running meanwhile
                self.cond(R.RUNNING, False, R.WORKERS_PENDING, st.message)
        return self.plan

    def suspend(self, current: dict[int, Worker]) -> Plan:
        st = self.st
        if st.phase != Phase.SUSPENDED:
            st.phase = Phase.SUSPENDED
            st.backoff_until = None
            st.message = "suspended"
            self.cond(R.SUSPENDED, True, R.JOB_SUSPENDED, "spec.runPolicy.suspend is true")
            self.cond(R.RUNNING, False, R.JOB_SUSPENDED, "the job is suspended")
            self.cond(R.RESTARTING, False, R.JOB_SUSPENDED, "the job is suspended")
            self.event(NORMAL, R.JOB_SUSPENDED, "the job is suspended: its workers are deleted")
            if current:
                # The suspended gang's rendezvous is closed; resuming needs a fresh one.
                st.attempt += 1
                st.rendezvous_attempt = st.attempt
        self.delete([w for w in self.workers if w.active])
        self.st.workers = WorkerCounts(desired=self.spec.desired_workers)
        return self.plan

    def on_failure(self, members: dict[int, Worker], surplus: list[Worker], failed: list[Worker]) -> Plan:
        st, fp = self.st, self.spec.failure_policy
        self.counts(members)
        root = _root_cause(failed)
        what = describe(root)
        if root.disruption:
            st.disruptions += 1
            return self.restart(members, surplus, root, root.disruption, f"{what}; restarting (not counted)", 0.0)
        if not fp.is_retryable(root.exit_code, root.oom, root.hung):
            if root.hung:
                reason = R.HUNG
            elif root.oom:
                reason = R.OOM_KILLED
            elif fp.restart_policy == RestartPolicy.NEVER:
                reason = R.WORKER_FAILED
                what += "; spec.failurePolicy.restartPolicy is Never"
            else:
                reason = R.NON_RETRYABLE_EXIT_CODE
                what += " which is not in spec.failurePolicy.retryableExitCodes" if fp.retryable_exit_codes \
                    is not None else " which is not retryable (only signal exits 128-255 except 137 are)"
            return self.finish(False, reason, what)
        if st.restarts >= fp.backoff_limit:
            return self.finish(False, R.BACKOFF_LIMIT_EXCEEDED,
                               f"{what}; spec.failurePolicy.backoffLimit={fp.backoff_limit} restarts used up")
        st.restarts += 1
        reason = R.HUNG if root.hung else R.OOM_KILLED if root.oom else R.WORKER_FAILED
        delay = fp.backoff_delay(st.restarts)
        return self.restart(members, surplus, root, reason,
                            f"{what}; restart {st.restarts} of {fp.backoff_limit}", delay)

    def restart(self, members: dict[int, Worker], surplus: list[Worker], root: Worker, reason: str,
                message: str, delay: float) -> Plan:
        st, spec = self.st, self.spec
        st.attempt += 1
        single = (spec.failure_policy.restart_scope == RestartScope.WORKER and spec.elastic is not None
                  and root.index != 0)
        st.phase = Phase.RESTARTING
        st.message = message
        self.cond(R.RESTARTING, True, reason, message)
        self.cond(R.RUNNING, False, reason, message)
        self.event(WARNING, reason, message)
        if single:
            # The others keep running and re-rendezvous with the replacement under the same id.
            self.launch(root.index, st.attempt)
            return self.plan
        st.rendezvous_attempt = st.attempt
        self.delete([w for w in list(members.values()) + surplus if w.active])
        if delay > 0:
            st.backoff_until = self.now + timedelta(seconds=delay)
            self.plan.wake_at(self.now, st.backoff_until)
        else:
            for i in range(spec.desired_workers):
                self.launch(i, st.attempt)
        return self.plan

    def hung(self, members: dict[int, Worker]) -> list[Worker]:
        """Workers that are all alive but none made progress within the deadline (seen through the
        heartbeat by backends that can; on Kubernetes the launcher exits with HUNG_EXIT_CODE instead)."""
        limit = self.spec.run_policy.progress_deadline_seconds
        if limit is None or not members or len(members) < self.spec.desired_workers:
            return []
        if not all(w.state == State.RUNNING and w.last_progress is not None for w in members.values()):
            return []
        newest = max(w.last_progress for w in members.values())
        expiry = newest + timedelta(seconds=limit)
        if self.now < expiry:
            self.plan.wake_at(self.now, expiry)
            return []
        idle = int((self.now - newest).total_seconds())
        return [replace(members[min(members)], state=State.FAILED, hung=True,
                        message=f"no worker reported progress for {idle}s "
                                f"(spec.runPolicy.progressDeadlineSeconds={limit})")]

    def stuck(self, members: dict[int, Worker]) -> bool | None:
        """Reports workers that cannot start. None: the job failed for it; True: some are stuck."""
        limit = self.spec.run_policy.startup_deadline_seconds
        stuck = sorted((w for w in members.values() if w.state == State.PENDING and w.reason),
                       key=lambda w: w.index)
        for w in stuck:
            expiry = (w.created_at or self.now) + timedelta(seconds=limit)
            if self.now >= expiry or w.reason in R.PERMANENT_STUCK_REASONS:
                self.finish(False, w.reason,
                            f"worker {w.index} (pod {w.name}) could not start: {w.reason}"
                            + (f": {w.message}" if w.message else "")
                            + (f" (for more than spec.runPolicy.startupDeadlineSeconds={limit})"
                               if w.reason not in R.PERMANENT_STUCK_REASONS else ""))
                return None
        if stuck:
            w = stuck[0]
            msg = (f"worker {w.index} (pod {w.name}) cannot start: {w.reason}" + (f": {w.message}" if w.message else "")
                   + f"; the job fails after spec.runPolicy.startupDeadlineSeconds={limit}")
            running = self.st.condition(R.RUNNING)
            # Unschedulable is often brief (a volume binding, an autoscaler adding a node) and the
            # scheduler already reports it on the pod: only the condition says it, until the deadline.
            if (running is None or running.reason != w.reason) and w.reason != R.UNSCHEDULABLE:
                self.event(WARNING, w.reason, msg)
            self.st.message = msg
            self.cond(R.RUNNING, False, w.reason, msg)
            for s in stuck:
                self.plan.wake_at(self.now, (s.created_at or self.now) + timedelta(seconds=limit))
        return bool(stuck)


def decide(job: DistributedTrainingJob, workers: list[Worker], now: datetime) -> Plan:
    """The whole decision for one reconcile. Pure: same inputs, same plan."""
    return _Decider(job, workers, now).decide()
