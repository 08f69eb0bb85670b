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
  first kind, or once `COUNTS_INTERVAL_SECONDS` have passed since the job's last status write.

So a gang whose workers start one by one costs one write when it is created and one when it is
Running, rather than one per worker; a gang that takes minutes to start still shows its counts
moving, at most every COUNTS_INTERVAL_SECONDS. Pure: the drivers apply the rate.
"""

from __future__ import annotations

from typing import Any

from ..api import DistributedTrainingJobStatus

COUNTS_INTERVAL_SECONDS = 10.0

# The tally: fields of the status that may wait (condition messages are handled below).
TALLY_FIELDS = frozenset({"workers", "message"})


def _acted_on(status: DistributedTrainingJobStatus) -> dict[str, Any]:
    body = status.model_dump(mode="json", exclude=set(TALLY_FIELDS))
    body["conditions"] = [{k: v for k, v in c.items() if k != "message"} for c in body["conditions"]]
    return body


def urgent(old: DistributedTrainingJobStatus, new: DistributedTrainingJobStatus) -> bool:
    """True if `new` changes anything beyond the tally (the worker counts, the messages)."""
    return _acted_on(old) != _acted_on(new)
