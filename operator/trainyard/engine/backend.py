"""The backend contract both drivers implement (Kubernetes pods, local process trees), and the
one reconcile step they share: observe, decide, apply."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ..api import DistributedTrainingJob
from .decide import decide
from .plan import Plan
from .workers import Worker


class Backend(Protocol):
    def observe(self, job: DistributedTrainingJob) -> list[Worker]:
        """The job's workers of every attempt, as this backend sees them now."""

    def apply(self, job: DistributedTrainingJob, plan: Plan) -> bool:
        """Carries out a plan, always in this order: delete workers (a superseded gang is told to
        stop before its successor starts), make the children the plan needs, create workers and
        write the status, and only once the status is written, post the events. Returns True when
        an action failed and the job should be looked at again soon."""


def reconcile(job: DistributedTrainingJob, backend: Backend, now: datetime) -> tuple[Plan, bool]:
    """One reconcile: the plan that was applied, and whether to look again soon."""
    plan = decide(job, backend.observe(job), now)
    return plan, backend.apply(job, plan)
