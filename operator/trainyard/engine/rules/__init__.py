"""The decision rules, in the order they apply. Each takes the decision in the making and returns
None (go on), Stop (the plan is complete) or Finish (the job ends); one module per policy."""

from __future__ import annotations

from collections.abc import Callable

from ..decision import Decision, Outcome
from .failure_policy import on_fault
from .lifecycle import already_finished, being_deleted, invalid_spec, started
from .phase import running
from .queue_policy import queued
from .run_policy import active_deadline
from .scaling import backoff, scale, superseded
from .startup_policy import stuck_workers
from .success_policy import all_succeeded
from .suspend_policy import resumed, suspended

Rule = Callable[[Decision], Outcome]

RULES: tuple[Rule, ...] = (
    being_deleted,  # garbage collection takes the children; nothing to decide
    already_finished,  # only cleanPodPolicy and the TTL
    invalid_spec,  # what the CRD's rules should have refused fails the job
    suspended,  # delete every worker and pause
    resumed,  # a new start, not a restart
    queued,  # Kueue: no worker before admission; an eviction stops them (not a restart)
    started,
    active_deadline,
    superseded,  # older gangs' pods go
    on_fault,  # failures, disruptions and hangs: restart or fail (failurePolicy)
    backoff,  # the next gang waits for its backoff
    scale,  # create missing workers, delete surplus ones
    all_succeeded,
    stuck_workers,  # workers that cannot start (startupDeadlineSeconds)
    running,  # Running, or waiting for workers to start
)
