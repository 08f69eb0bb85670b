"""What the operator expects the watch to show soon: its own creations and deletions, which the
pod index reflects only after the watch catches up, and pods that vanished without it.

Losing these (an operator restart) is safe: they only hide the watch's lag behind our own
writes and remember pods whose DELETED event has been seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..engine.plan import Launch
from ..engine.workers import State, Worker

# How long our own creations may lag behind the watch. The bench saw a 500-job burst lag past 60 s
# and re-send 129 creates (409s, wasted writes); a created pod always reaches the index (ADDED comes
# before any DELETED on the watch), so waiting longer costs nothing.
CREATION_TTL = 300.0
DELETION_TTL = 900.0  # pods we deleted may take their grace period (and more) to disappear


class Expectations:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.created: dict[str, tuple[Worker, float]] = {}
        self.deleted: dict[str, float] = {}
        self.tombstones: dict[str, Worker] = {}

    def expect_created(self, launches: Iterable[Launch]) -> None:
        now = self.clock()
        for launch in launches:
            self.created[launch.name] = (Worker(launch.name, launch.index, launch.attempt, State.PENDING), now)

    def creation_failed(self, name: str) -> None:
        """Not expected any more: the next reconcile creates it again."""
        self.created.pop(name, None)

    def expect_deleted(self, names: Iterable[str]) -> list[str]:
        """Records deletions about to be sent; returns those not already sent."""
        now = self.clock()
        new = [n for n in names if n not in self.deleted]
        self.deleted.update({n: now for n in new})
        return new

    def vanished(self, worker: Worker) -> None:
        """A pod's DELETED event: someone else deleted it (or a node went away), unless we did."""
        if worker.name not in self.deleted:
            self.tombstones[worker.name] = worker.vanished()
        # A deletion never hides behind a creation the watch had not shown yet.
        self.created.pop(worker.name, None)

    def workers(self, seen: Iterable[Worker]) -> list[Worker]:
        """The workers to decide on: what the index shows, plus creations it does not show yet and
        pods that vanished; pods we already asked to delete are gone as far as decisions go."""
        now = self.clock()
        by_name = {w.name: w for w in seen}
        self.created = {n: v for n, v in self.created.items() if n not in by_name and now - v[1] < CREATION_TTL}
        self.deleted = {n: t for n, t in self.deleted.items() if now - t < DELETION_TTL}
        workers = list(by_name.values())
        workers += [w for w, _ in self.created.values()]
        workers += [w for n, w in self.tombstones.items() if n not in by_name and n not in self.created]
        return [w for w in workers if w.name not in self.deleted or not w.active]

    def forget_before(self, rendezvous_attempt: int) -> None:
        """Vanished pods of gangs before the current one no longer matter."""
        if rendezvous_attempt:
            self.tombstones = {n: w for n, w in self.tombstones.items() if w.attempt >= rendezvous_attempt}
