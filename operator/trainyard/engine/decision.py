"""One decision in the making: its inputs, the status and plan it builds, and the outcomes a rule
can return."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..api import CleanPodPolicy, DistributedTrainingJob, DistributedTrainingJobSpec, Phase, WorkerCounts
from ..api import reasons as R
from ..api.names import worker_name
from .conditions import set_condition
from .gang import current_gang
from .plan import NORMAL, WARNING, Event, Launch, Plan
from .workers import State, Worker


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
    superseded: list[Worker]  # workers of attempts before the current gang

    @classmethod
    def of(cls, job: DistributedTrainingJob, workers: list[Worker]) -> Gang:
        current = current_gang(workers, job.status)
        chosen = {id(w) for w in current.values()}
        desired = job.spec.desired_workers
        return cls(
            members={i: w for i, w in current.items() if i < desired},
            surplus=[w for i, w in current.items() if i >= desired],
            # Pods of a later attempt come from a decision whose status write was lost: leave them be,
            # the same decision is about to be made again and will find them.
            superseded=[w for w in workers if id(w) not in chosen and w.attempt <= job.status.attempt],
        )


@dataclass
class Decision:
    job: DistributedTrainingJob
    workers: list[Worker]
    now: datetime
    gang: Gang
    plan: Plan = field(init=False)

    def __post_init__(self) -> None:
        status = self.job.status.model_copy(deep=True)
        status.observed_generation = self.job.metadata.generation
        self.plan = Plan(status=status)

    @classmethod
    def start(cls, job: DistributedTrainingJob, workers: list[Worker], now: datetime) -> Decision:
        return cls(job, list(workers), now, Gang.of(job, list(workers)))

    @property
    def spec(self) -> DistributedTrainingJobSpec:
        return self.job.spec

    @property
    def status(self):
        return self.plan.status

    # -- building the plan
    def event(self, type_: str, reason: str, message: str) -> None:
        self.plan.events.append(Event(type_, reason, message))

    def condition(self, type_: str, true: bool, reason: str, message: str) -> None:
        set_condition(self.plan.status, type_, true, reason, message, self.now)

    def delete(self, workers: list[Worker]) -> None:
        for w in workers:
            if w.state != State.VANISHED and w.name not in self.plan.delete:
                self.plan.delete.append(w.name)

    def launch(self, index: int, attempt: int) -> None:
        self.plan.create.append(Launch(worker_name(self.job.metadata.name, attempt, index), index, attempt,
                                       self.status.rendezvous_attempt))

    def wake_at(self, when: datetime | None) -> None:
        self.plan.wake_at(self.now, when)

    def count(self) -> None:
        ms = list(self.gang.members.values())
        self.status.workers = WorkerCounts(
            desired=self.spec.desired_workers,
            active=sum(w.active for w in ms),
            ready=sum(w.state == State.RUNNING and w.ready for w in ms),
            succeeded=sum(w.state == State.SUCCEEDED for w in ms),
            failed=sum(w.failed for w in ms),
        )

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
