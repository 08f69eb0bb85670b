"""The decision: one pure function from (job, observed workers, now) to a Plan.

No I/O happens here. The Kubernetes driver applies plans to pods, the local driver to
processes; both feed back what they observe as `Worker`s. Every rule is level-based: the plan
depends only on the job (spec, and the status the engine wrote last time) and what is observed
now, so deciding twice on the same input gives the same plan, and deciding again after a crash
loses nothing. The rules and their order are in `rules.RULES`.
"""

from __future__ import annotations

from datetime import datetime

from ..api import DistributedTrainingJob
from ..api import reasons as R
from .decision import Decision, Finish
from .plan import Plan
from .progress import update_progress
from .roster import write_roster
from .rules import RULES
from .workers import Child, Worker

_REMADE = ("Service", "PersistentVolumeClaim")  # children a gang cannot start without


def decide(job: DistributedTrainingJob, workers: list[Worker], now: datetime,
           children: list[Child] | None = None) -> Plan:
    """The whole decision for one reconcile. Pure: same inputs, same plan."""
    d = Decision.start(job, workers, now, children)
    deleting = job.metadata.deletionTimestamp is not None
    count = True
    for rule in RULES:
        outcome = rule(d)
        if outcome is None:
            continue
        if isinstance(outcome, Finish):
            d.count()
            d.finish(outcome)
            d.clean_up_finished()
            count = False
        else:
            count = outcome.count
        break
    if count:
        d.count()
    plan = d.plan
    if deleting:
        return plan
    plan.status.members = write_roster(d.roster)
    # A first gang, or a new one after a gang restart, needs its Service and claim (re-made if
    # someone deleted them); so does any gang whose children were refused or are missing.
    plan.ensure_children = bool(plan.create) and (
        job.status.condition(R.CREATED) is None or plan.status.rendezvous_attempt != job.status.rendezvous_attempt
        or any(c.refusal is not None or c.exists is False for c in d.children if c.kind in _REMADE))
    d.wake_at(update_progress(job.status, plan.status, d.children, now))  # last: it sees every other change
    return plan
