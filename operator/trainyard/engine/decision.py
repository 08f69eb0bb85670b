"""One decision in the making: its inputs, the status and plan it builds, and the outcomes a rule
can return."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..api import CleanPodPolicy, DistributedTrainingJob, DistributedTrainingJobSpec, Phase, RestartMode, WorkerCounts
from ..api import reasons as R
from ..api.names import worker_name
from .conditions import set_condition
from .gang import current_gang
from .plan import NORMAL, WARNING, Event, Launch, Plan
from .refusals import retry_at
from .roster import Member, read_roster
from .workers import Child, Refusal, State, Worker


@dataclass(frozen=True)
class Stop:
    """The plan is complete; no later rule runs. `count`: set the worker counts from the gang."""

    count: bool = True


@dataclass(frozen=True)
class Finish:
    """The job ends: Succeeded or Failed with this reason and message."""

    succeeded: bool
    reason: str
    message: str


Outcome = Stop | Finish | None  # None: go on with the next rule


@dataclass(frozen=True)
class Gang:
    """The workers as the job's status sees them at the start of the decision."""

    members: dict[int, Worker]  # current worker of each index below spec.workers
    surplus: list[Worker]  # current workers of indices at or above spec.workers (a scale-down)
    superseded: list[Worker]  # workers of attempts before the current gang, and replaced ones
    roster: dict[int, Member]  # index -> the current gang's pod (status.members)

    @classmethod
    def of(cls, job: DistributedTrainingJob, workers: list[Worker]) -> Gang:
        recorded = read_roster(job.status)
        if recorded is None and job.status.phase is None:
            recorded = {}  # a new job
        elif recorded is None:  # a status an older operator wrote: the newest pod of each index
            recorded = {i: Member(w.attempt) for i, w in current_gang([w for w in workers if w.exists],
                                                                      job.status).items()}
        desired = job.spec.desired_workers
        for w in workers:
            # A pod of the current attempt that the status does not list was created by a decision
            # whose status write did not happen (a refusal beside it, a crash): it is a member.
            if w.exists and w.attempt == job.status.attempt and w.index < desired and w.index not in recorded:
                recorded[w.index] = Member(w.attempt)
        by_name = {w.name: w for w in workers}
        current: dict[int, Worker] = {}
        for index, member in sorted(recorded.items()):
            name = worker_name(job.metadata.name, member.attempt, index)
            seen = by_name.get(name)
            if seen is not None and (seen.exists or not member.created):
                current[index] = seen
            elif member.created:
                # A member the operator created and did not delete, that no longer exists, was deleted
                # by someone else: seen even when the deletion happened while the operator was down.
                current[index] = Worker(name, index, member.attempt, State.PENDING).vanished()
            else:
                current[index] = Worker(name, index, member.attempt, State.PENDING, exists=False)
        chosen = {w.name for w in current.values()}
        return cls(
            members={i: w for i, w in current.items() if i < desired},
            surplus=[w for i, w in current.items() if i >= desired],
            # Pods of the current or a later attempt come from a decision whose status write was lost:
            # leave them be, the same decision is about to be made again and will find them.
            superseded=[w for w in workers if w.name not in chosen and w.attempt < job.status.attempt and w.exists],
            roster=recorded,
        )


@dataclass
class Decision:
    job: DistributedTrainingJob
    workers: list[Worker]
    now: datetime
    gang: Gang
    children: list[Child] = field(default_factory=list)
    plan: Plan = field(init=False)
    roster: dict[int, Member] = field(init=False)  # the members the new status records
    refusals: dict[str, Refusal] = field(init=False)  # pods whose creation the apiserver refused, by name

    def __post_init__(self) -> None:
        status = self.job.status.model_copy(deep=True)
        status.observed_generation = self.job.metadata.generation
        self.plan = Plan(status=status)
        self.roster = dict(self.gang.roster)
        for w in [*self.gang.members.values(), *self.gang.surplus]:
            if w.exists and not self.roster[w.index].created:
                self.roster[w.index] = Member(w.attempt)  # its pod came to exist: a retry got through
        self.refusals = {w.name: w.refusal for w in self.workers if w.refusal is not None}

    @classmethod
    def start(cls, job: DistributedTrainingJob, workers: list[Worker], now: datetime,
              children: list[Child] | None = None) -> Decision:
        return cls(job, list(workers), now, Gang.of(job, list(workers)), list(children or []))

    @property
    def spec(self) -> DistributedTrainingJobSpec:
        return self.job.spec

    @property
    def status(self):
        return self.plan.status

    # -- building the plan
    def event(self, type_: str, reason: str, message: str) -> None:
        self.plan.events.append(Event(type_, reason, message))

    def condition(self, type_: str, true: bool, reason: str, message: str, at: datetime | None = None) -> None:
        """`at`: when it became so, if that was before this decision (a transition's time)."""
        set_condition(self.plan.status, type_, true, reason, message, at or self.now)

    def first_pod_created_at(self) -> datetime | None:
        """When the current gang's first pod was created, as observed; None: none observed yet. A
        status written a while after its gang was created (engine.writes) keeps the true time."""
        return min((w.created_at for w in self.gang.members.values() if w.exists and w.created_at is not None),
                   default=None)

    def delete(self, workers: list[Worker]) -> None:
        for w in workers:
            member = self.roster.get(w.index)
            if member is not None and member.attempt == w.attempt:
                del self.roster[w.index]
            if w.state != State.VANISHED and w.exists and w.name not in self.plan.delete:
                self.plan.delete.append(w.name)

    def launch(self, index: int, attempt: int) -> None:
        """Worker `index` is a member now, at `attempt`; its pod is created, unless the apiserver
        refused that pod and the retry is not due yet (then the member waits, recorded as such)."""
        name = worker_name(self.job.metadata.name, attempt, index)
        refusal = self.refusals.get(name)
        if refusal is not None and (refusal.permanent or self.now < retry_at(refusal)):
            self.roster[index] = Member(attempt, created=False)
            if not refusal.permanent:
                self.wake_at(retry_at(refusal))
            return
        warm = self.spec.failure_policy.restart_mode == RestartMode.WARM
        self.plan.create.append(Launch(name, index, attempt, self.status.rendezvous_attempt, warm))
        self.roster[index] = Member(attempt)

    def child(self, kind: str) -> Child | None:
        return next((c for c in self.children if c.kind == kind), None)

    def wake_at(self, when: datetime | None) -> None:
        self.plan.wake_at(self.now, when)

    def count(self) -> None:
        """The current gang's pods as they are after this plan (its deletions done). A job that has
        already ended keeps the outcomes it ended with: its clean-up's deletions (a pod seen while it
        terminates, a SIGTERM's exit code) lower active and ready, never add a failure."""
        ms = [w for w in self.gang.members.values() if w.state != State.VANISHED]
        gone = set(self.plan.delete)
        counts = WorkerCounts(
            desired=self.spec.desired_workers,
            active=sum(w.active and w.name not in gone for w in ms),
            ready=sum(w.state == State.RUNNING and w.ready and w.name not in gone for w in ms),
            succeeded=sum(w.state == State.SUCCEEDED for w in ms),
            failed=sum(w.state == State.FAILED for w in ms),
        )
        ended = self.job.status.workers if self.job.status.phase in (Phase.SUCCEEDED, Phase.FAILED) else None
        if ended is not None:
            counts = counts.model_copy(update={"succeeded": ended.succeeded, "failed": ended.failed})
        self.status.workers = counts

    # -- ending the job
    def finish(self, outcome: Finish) -> None:
        st = self.status
        st.phase = Phase.SUCCEEDED if outcome.succeeded else Phase.FAILED
        st.completion_time = self.now
        st.backoff_until = None
        st.message = outcome.message
        self.condition(R.SUCCEEDED if outcome.succeeded else R.FAILED, True, outcome.reason, outcome.message)
        self.condition(R.RUNNING, False, outcome.reason, outcome.message)
        self.condition(R.RESTARTING, False, outcome.reason, outcome.message)
        self.event(NORMAL if outcome.succeeded else WARNING, outcome.reason, outcome.message)
        self.plan.create.clear()

    def clean_up_finished(self) -> None:
        """spec.runPolicy.cleanPodPolicy and ttlSecondsAfterFinished, for a job that has ended."""
        policy = self.spec.run_policy.clean_pod_policy
        if policy == CleanPodPolicy.ALL:
            self.delete(self.workers)
        elif policy == CleanPodPolicy.RUNNING:
            self.delete([w for w in self.workers if w.active])
        ttl = self.spec.run_policy.ttl_seconds_after_finished
        if ttl is not None and self.status.completion_time is not None:
            expiry = self.status.completion_time + timedelta(seconds=ttl)
            if self.now >= expiry:
                self.plan.delete_job = True
            else:
                self.wake_at(expiry)
