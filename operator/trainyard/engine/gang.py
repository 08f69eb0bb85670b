"""The current gang: the one rule for which workers are the job's workers now. The engine decides
with it; the SDK shows and follows logs with it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from ..api import DistributedTrainingJobStatus


class _Member(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def attempt(self) -> int: ...


W = TypeVar("W", bound=_Member)  # an engine Worker, an SDK WorkerInfo


def current_gang(workers: Iterable[W], status: DistributedTrainingJobStatus) -> dict[int, W]:
    """The newest worker of each index among the attempts since the last gang restart
    (status.rendezvousAttempt .. status.attempt), by index. Workers of a later attempt come from a
    decision whose status write was lost; they are not current until it is made again."""
    current: dict[int, W] = {}
    for w in workers:
        in_gang = status.rendezvous_attempt <= w.attempt <= status.attempt
        if in_gang and (w.index not in current or w.attempt > current[w.index].attempt):
            current[w.index] = w
    return dict(sorted(current.items()))
