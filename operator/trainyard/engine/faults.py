"""A fault of the gang, and which one caused the rest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .workers import State, Worker


@dataclass(frozen=True)
class Fault:
    """Why a gang cannot go on: a worker that failed or vanished, or a gang that made no progress."""

    index: int
    pod: str
    exit_code: int | None = None
    oom: bool = False
    hung: bool = False
    disruption: str | None = None  # Evicted, NodeLost, PodDeleted: not the workload's fault
    vanished: bool = False
    reason: str = ""
    message: str = ""
    peer_lost: bool = False  # a consequence: the gang broke under this worker

    @classmethod
    def of(cls, w: Worker) -> Fault:
        return cls(w.index, w.name, w.exit_code, w.oom, w.hung, w.disruption, w.state == State.VANISHED, w.reason,
                   w.message, w.peer_lost)

    def describe(self) -> str:
        who = f"worker {self.index} (pod {self.pod})"
        if self.disruption:
            return f"{who} was disrupted: {self.disruption}" + (f": {self.message}" if self.message else "")
        if self.vanished:
            return f"{who} was deleted"
        if self.hung:
            return f"{who} made no training progress" + (f": {self.message}" if self.message else "")
        if self.oom:
            return (f"{who} was OOM-killed (exit code {self.exit_code}); "
                    "raise the trainer container's memory limit or lower the batch size")
        if self.peer_lost:
            return (f"{who} lost its gang (exit code {self.exit_code}): a peer failed or the rendezvous store could "
                    "not be reached, and no other worker's failure explains it")
        return f"{who} exited with code {self.exit_code}" + (f" ({self.reason})" if self.reason else "")


def root_cause(failed: list[Worker]) -> Fault:
    """The failure that started it: a disruption explains the peers' collective errors; otherwise
    the earliest to finish, since the others usually fail because it did."""
    pool = [w for w in failed if w.disruption] or failed
    far = datetime.max.replace(tzinfo=None)

    def key(w: Worker) -> tuple:
        t = w.finished_at.replace(tzinfo=None) if w.finished_at else far
        return (t, w.index)

    return Fault.of(min(pool, key=key))
