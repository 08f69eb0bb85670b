"""Conditions as Kubernetes writes them: one per type, lastTransitionTime kept while unchanged."""

from __future__ import annotations

from datetime import datetime

from ..api import Condition, DistributedTrainingJobStatus
from ..api import reasons as R


def set_condition(status: DistributedTrainingJobStatus, type_: str, true: bool, reason: str, message: str,
                  now: datetime) -> None:
    value = "True" if true else "False"
    for i, c in enumerate(status.conditions):
        if c.type == type_:
            ltt = c.last_transition_time if c.status == value else now
            status.conditions[i] = Condition(type=type_, status=value, reason=reason, message=message,
                                             last_transition_time=ltt)
            return
    if not true and type_ not in (R.RUNNING, R.CREATED, R.ADMITTED):
        return  # a condition that never happened (a restart, a suspension) is absent rather than False
    status.conditions.append(Condition(type=type_, status=value, reason=reason, message=message,
                                       last_transition_time=now))
