"""What a backend observes of one worker, independent of Kubernetes.

The Kubernetes driver turns pods into `Worker`s (`trainyard.kube.pods.from_pod`); the local
driver turns processes into them. The decision engine only ever sees `Worker`s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from ..api import reasons


class State(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    VANISHED = "Vanished"  # gone without the operator deleting it (force delete, node garbage collection)


@dataclass(frozen=True)
class Worker:
    name: str
    index: int
    attempt: int
    state: State
    ready: bool = False
    exit_code: int | None = None
    oom: bool = False
    hung: bool = False
    # why it stopped (Failed) or cannot start (Pending): a pod reason, a waiting reason, Unschedulable
    reason: str = ""
    message: str = ""
    disruption: str | None = None  # Evicted, NodeLost or PodDeleted: not the workload's fault
    created_at: datetime | None = None
    finished_at: datetime | None = None
    # newest heartbeat, for backends that can see it (the local runtime); None when unknown
    last_progress: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state in (State.PENDING, State.RUNNING)

    @property
    def failed(self) -> bool:
        return self.state in (State.FAILED, State.VANISHED)

    def vanished(self) -> Worker:
        return replace(self, state=State.VANISHED, ready=False, disruption=reasons.POD_DELETED,
                       reason=reasons.POD_DELETED, message=f"pod {self.name} was deleted")
