"""The backend contract both drivers implement (Kubernetes pods, local process trees), and the
one reconcile step they share: observe, decide, apply."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Protocol

from ..api import DistributedTrainingJob
from .decide import decide
from .plan import Plan
from .workers import Child, Worker


class Applied(Enum):
    DONE = "done"
    RETRY_SOON = "retry-soon"  # something failed that the next reconcile does again (a delete)
    # A creation was refused: this plan's status was not written, because it counts the refused
    # pods as created. Decide again now, with the refusals observed, and write that status.
    DECIDE_AGAIN = "decide-again"


class Backend(Protocol):
    def observe(self, job: DistributedTrainingJob) -> tuple[list[Worker], list[Child]]:
        """The job's workers of every attempt and its children, as this backend sees them now."""

    def apply(self, job: DistributedTrainingJob, plan: Plan) -> Applied:
        """Carries out a plan, always in this order: delete workers (a superseded gang is told to
        stop before its successor starts); make the children the plan needs and create workers;
        then, if every creation succeeded, write the status, and only once it is written, post
        the events."""


def reconcile(job: DistributedTrainingJob, backend: Backend, now: datetime) -> tuple[Plan, Applied]:
    """One reconcile: the plan that was applied, and what came of it."""
    workers, children = backend.observe(job)
    plan = decide(job, workers, now, children)
    return plan, backend.apply(job, plan)
