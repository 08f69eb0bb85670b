"""The job succeeds when every worker of the current gang exited 0."""

from __future__ import annotations

from ...api import reasons as R
from ..decision import Decision, Finish, Outcome
from ..workers import State


def all_succeeded(d: Decision) -> Outcome:
    desired, members = d.spec.desired_workers, d.gang.members
    if len(members) == desired and all(w.state == State.SUCCEEDED for w in members.values()):
        return Finish(True, R.ALL_WORKERS_SUCCEEDED, f"all {desired} workers succeeded")
    return None
