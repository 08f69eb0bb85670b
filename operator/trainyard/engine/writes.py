"""Which status changes are written at once, and which may wait.

Every status write is an API write, and it wakes every watcher of the job (the operator's own loop
too). What a decision changes in the status is of two kinds:

- what a user or a controller acts on: the phase, a condition's status or reason (or a new one),
  the members, the attempt, restarts, disruptions, the backoff, the times, the observed generation,
  the selector. A decision that changes any of these (or posts an event) is written at once, in the
  reconcile that made it: a fault, a restart or a terminal status is never written later than it
  is decided.
- the running tally: the worker counts (`status.workers`) and the wording of the messages
  ("waiting for 3 of 8 workers to start"). Alone, these are written with the next change of the
  first kind, or once `COUNTS_INTERVAL_SECONDS` have passed since the job's last status write and
  `SETTLE_SECONDS` since the tally first changed: pods move in bursts (a gang's pods bound together,
  finishing together), and the first of a burst is not worth a write of its own when the phase
  change that ends the burst follows within seconds.

- a new job's first status, when all it says is that the first gang's pods were created (phase
  Pending, Created=True): it may wait `SETTLE_SECONDS` for the gang to run. Pods that start
  within that time make it one write (phase Running) instead of two. Waiting loses nothing: the
  pods carry their attempt, so a decision made before the write (or by an operator restarted
  meanwhile) adopts them as the gang's members, and `startTime` is the first pod's creation.

So a gang whose workers start one by one costs one write when it is Running (or one when it is
created, if starting takes longer than SETTLE_SECONDS, and one when it is Running), rather than
one per worker; a gang that takes minutes to start still shows its counts moving, at most every
COUNTS_INTERVAL_SECONDS. Pure: the drivers apply the rates.
"""

from __future__ import annotations

from typing import Any

from ..api import DistributedTrainingJobStatus, Phase
from ..api import reasons as R

COUNTS_INTERVAL_SECONDS = 10.0
SETTLE_SECONDS = 3.0

# The tally: fields of the status that may wait (condition messages are handled below).
TALLY_FIELDS = frozenset({"workers", "message"})


def _acted_on(status: DistributedTrainingJobStatus) -> dict[str, Any]:
    body = status.model_dump(mode="json", exclude=set(TALLY_FIELDS))
    body["conditions"] = [{k: v for k, v in c.items() if k != "message"} for c in body["conditions"]]
    return body


def urgent(old: DistributedTrainingJobStatus, new: DistributedTrainingJobStatus) -> bool:
    """True if `new` changes anything beyond the tally (the worker counts, the messages)."""
    return _acted_on(old) != _acted_on(new)


def write_wait(old: DistributedTrainingJobStatus, new: DistributedTrainingJobStatus, has_events: bool,
               held_since: float, written_at: float | None, now: float) -> float:
    """Seconds until `new` may be written (0: now). `held_since`: when this not-yet-written status was
    first held back (now, if it is new); `written_at`: the job's last status write (None: none yet).
    A decision that posts an event or changes what is acted on is written at once; a new job's first
    gang waits SETTLE_SECONDS for its pods to run; a tally waits SETTLE_SECONDS after it moved and
    COUNTS_INTERVAL_SECONDS after the last write."""
    first = first_gang_created(old, new)
    if has_events or (urgent(old, new) and not first):
        return 0.0
    due = held_since + SETTLE_SECONDS
    if not first and written_at is not None:
        due = max(due, written_at + COUNTS_INTERVAL_SECONDS)
    return max(0.0, due - now)


def first_gang_created(old: DistributedTrainingJobStatus, new: DistributedTrainingJobStatus) -> bool:
    """True if `new` is a new job's first status and says only that its first gang was created:
    the one acted-on change that may wait SETTLE_SECONDS (nothing failed, nothing was refused)."""
    created = new.condition(R.CREATED)
    return (old.phase is None and new.phase == Phase.PENDING and new.attempt == 0
            and created is not None and created.status == "True")
