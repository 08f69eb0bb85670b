"""The status: what the operator observed and decided, written only by it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from .base import Model


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class Condition(Model):
    """A standard Kubernetes condition."""

    type: str = Field(description="Created, Running, Restarting, Suspended, Succeeded or Failed; Admitted for a job "
                                  "queued in Kueue.")
    status: str = Field(description="True, False or Unknown.", json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str = Field("", description="A CamelCase reason, one of the documented constants.")
    message: str = Field("", description="What happened, and what to do about it.")
    last_transition_time: datetime | None = Field(None, description="When status last changed.")


class WorkerCounts(Model):
    """Worker pods of the current attempt."""

    desired: int = Field(0, description="Workers the job wants.")
    active: int = Field(0, description="Pods that exist and have not finished (pending or running).")
    ready: int = Field(0, description="Pods that are running and ready.")
    succeeded: int = Field(0, description="Pods whose trainer exited 0.")
    failed: int = Field(0, description="Pods that failed.")


class Members(Model):
    """Worker pods of one attempt that belong to the current gang."""

    attempt: int = Field(description="Their attempt (the trainyard.dev/attempt label; pods are <job>-<attempt>-<index>).")
    indexes: str = Field(description='Their worker indexes, as ranges: "0-3,5".', max_length=65536)
    created: bool = Field(
        True, description="False: their pods are yet to be created (the apiserver refused them; retried with a backoff).")


class Progress(Model):
    """Training progress as rank 0 last reported it (through the job's Lease), written at most every
    30 seconds. After a gang restart it keeps the last known step, marked stale, until the new gang
    reports; resumedFromStep then says where the new gang started (with status.restarts: "resumed at
    step 300 after restart 1")."""

    step: int | None = Field(None, description="The last completed optimizer step.")
    total_steps: int | None = Field(None, description="The steps the training runs for, as the trainer reports it.")
    percent: float | None = Field(None, description="step / totalSteps, in percent (one decimal).")
    loss: float | None = Field(None, description="The last reported loss.")
    samples_per_second: float | None = Field(None, description="Training throughput, all workers together.")
    last_checkpoint_step: int | None = Field(None, description="The step of the last completed checkpoint.")
    last_checkpoint_time: datetime | None = Field(None, description="When the last checkpoint completed.")
    estimated_completion_time: datetime | None = Field(
        None, description="When training should reach totalSteps at the recent step rate.")
    eta: str | None = Field(
        None, max_length=32,
        description="The time left until estimatedCompletionTime when this was reported, as kubectl prints "
                    "durations (the ETA column).")
    updated_at: datetime | None = Field(None, description="When the trainer reported this (the step's completion).")
    observed_at: datetime | None = Field(None, description="When the operator wrote this into the status.")
    attempt: int | None = Field(None, description="The attempt of the worker pod that reported it (rank 0's).")
    resumed_from_step: int | None = Field(
        None, description="The step the reporting gang resumed from (its checkpoint's); absent when it started at 0.")
    stale: bool | None = Field(
        None, description="True: this comes from an earlier gang; the current one has not reported yet.")
    metrics: dict[str, float] | None = Field(
        None, max_length=16, description="Extra metrics the trainer reported (at most 16).",
        json_schema_extra={"additionalProperties": {"type": "number", "description": "The metric's last value."}})


class DistributedTrainingJobStatus(Model):
    """Observed state, written only by the operator."""

    phase: Phase | None = Field(None, description="Pending, Running, Restarting, Suspended, Succeeded or Failed.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions, one per type.")
    workers: WorkerCounts = Field(default_factory=WorkerCounts, description="Worker pod counts of the current attempt.")
    restarts: int = Field(0, description="Restarts after failures; these count toward failurePolicy.backoffLimit.")
    disruptions: int = Field(0, description="Restarts after evictions, node loss or pods deleted by others; never counted.")
    attempt: int = Field(
        0, description="Current attempt. Every restart starts a new one; pods carry it in trainyard.dev/attempt."
    )
    rendezvous_attempt: int = Field(
        0, description="Attempt whose rendezvous the workers use (PET_RDZV_ID=<uid>-<n>); changes on gang restarts."
    )
    members: list[Members] | None = Field(
        None, max_length=4096,
        description=(
            "The worker pods of the current gang that the operator has created, by attempt. A member that "
            "disappears without the operator deleting it (a forced delete, even while the operator was down) "
            "is seen as deleted; a worker index is never given the same pod name twice."
        ),
    )
    backoff_until: datetime | None = Field(None, description="The next attempt's workers are created at this time.")
    start_time: datetime | None = Field(None, description="When the job (or its last resume) started.")
    completion_time: datetime | None = Field(None, description="When the job succeeded or failed.")
    observed_generation: int | None = Field(None, description="The spec generation this status describes.")
    message: str | None = Field(None, description="A one-line summary of the current state.")
    selector: str | None = Field(
        None, description="Label selector of the job's worker pods, for the scale subresource (a HorizontalPodAutoscaler "
                          "reads it)."
    )
    progress: Progress | None = Field(
        None, description="Training progress as rank 0 reports it (step, ETA, loss, the last checkpoint).")

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
