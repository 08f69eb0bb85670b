"""What a decision asks a backend to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..api import DistributedTrainingJobStatus
from .admission import Placement

NORMAL = "Normal"
WARNING = "Warning"


@dataclass(frozen=True)
class Launch:
    """A worker to start. `warm`: the job allows the backend to hand this rank to a pre-started
    spare process (spec.failurePolicy.restartMode Warm); a backend without a spare ready, or one
    that has no spares, starts it cold."""

    name: str
    index: int
    attempt: int
    rendezvous_attempt: int
    warm: bool = False


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass
class Plan:
    """The new status, the workers to create and delete, events to post (only once the status is
    written) and when to look again. `ensure_children`: the Service and the checkpoint claim
    must exist before these workers start (a first gang, or a gang restart). `placement`: where the
    queue (Kueue) admitted the gang; every pod created gets it."""

    status: DistributedTrainingJobStatus
    create: list[Launch] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    delete_job: bool = False
    ensure_children: bool = False
    placement: Placement | None = None

    def wake_at(self, now: datetime, when: datetime | None) -> None:
        if when is None:
            return
        delay = max(0.0, (when - now).total_seconds())
        self.requeue_after = delay if self.requeue_after is None else min(self.requeue_after, delay)
