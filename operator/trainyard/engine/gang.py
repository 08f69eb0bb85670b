"""The current gang: the one rule for which workers are the job's workers now. The engine decides
with it; the SDK shows and follows logs with it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from ..api import DistributedTrainingJobStatus
from .roster import read_roster


class _Member(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def attempt(self) -> int: ...


W = TypeVar("W", bound=_Member)  # an engine Worker, an SDK WorkerInfo


def current_gang(workers: Iterable[W], status: DistributedTrainingJobStatus) -> dict[int, W]:
    """The member of each index, by index: the worker whose attempt status.members records for
    it. For a status an older operator wrote (no members), the newest worker of each index among
    the attempts since the last gang restart (status.rendezvousAttempt .. status.attempt)."""
    roster = read_roster(status)
    current: dict[int, W] = {}
    for w in workers:
        if roster is not None:
            member = roster.get(w.index)
            if member is not None and member.attempt == w.attempt:
                current[w.index] = w
        elif status.rendezvous_attempt <= w.attempt <= status.attempt and (
                w.index not in current or w.attempt > current[w.index].attempt):
            current[w.index] = w
    return dict(sorted(current.items()))
