"""The spec: what to run, and how to recover it. CEL rules attached through
`x-kubernetes-validations` name the field they refuse."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from .base import Model
from .cel import Expr, cel, concat, int_text

# The bound on every deadline and TTL: a year. Longer ones are surely mistakes, and the bound keeps
# the engine's datetime arithmetic (which overflows past year 9999) and the liveness probe's int32
# initialDelaySeconds (firstProgressDeadlineSeconds + 60) in range.
MAX_DURATION_SECONDS = 365 * 86400
# Hostnames are <job>-<attempt>-<index>: a 6-digit index at most (see MAX_NAME_LENGTH).
MAX_WORKERS = 100000
# The startup budget of hang detection when firstProgressDeadlineSeconds is unset (at least the
# progress deadline): the rendezvous join timeout's default, and what a real node took to a first
# step is far below it (70-85 s).
DEFAULT_FIRST_PROGRESS_SECONDS = 600


class Runtime(StrEnum):
    TORCHRUN = "torchrun"
    TENSORFLOW = "tensorflow"


class RestartPolicy(StrEnum):
    NEVER = "Never"
    ON_FAILURE = "OnFailure"
    EXIT_CODE = "ExitCode"


class RestartScope(StrEnum):
    GANG = "Gang"
    WORKER = "Worker"


class RestartMode(StrEnum):
    COLD = "Cold"
    WARM = "Warm"


class CleanPodPolicy(StrEnum):
    RUNNING = "Running"
    ALL = "All"
    NONE = "None"


class ElasticPolicy(Model):
    """Bounds for an elastic job. torchrun gets PET_NNODES=min:max and re-forms the group when
    workers join or leave; spec.workers is the desired count within these bounds."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minWorkers <= self.maxWorkers",
                    "spec.elastic.minWorkers must not exceed spec.elastic.maxWorkers",
                    ".minWorkers",
                    message_expression=concat("spec.elastic.minWorkers (", int_text("self.minWorkers", MAX_WORKERS),
                                              ") must not exceed spec.elastic.maxWorkers (",
                                              int_text("self.maxWorkers", MAX_WORKERS), ")"),
                )
            ]
        }
    )
    min_workers: int = Field(ge=1, le=MAX_WORKERS, description="Fewest workers the job can train with.")
    max_workers: int = Field(ge=1, le=MAX_WORKERS, description="Most workers the job can train with.")


class Rendezvous(Model):
    """torchrun c10d rendezvous settings. Worker 0 hosts the rendezvous store."""

    port: int = Field(
        29400, ge=1, le=65535,
        description="TCP port of the c10d rendezvous store on worker 0, and MASTER_PORT for a script that initialises "
                    "torch.distributed without torchrun. Changes only while the job is Suspended.",
    )
    join_timeout_seconds: int = Field(
        600, ge=1, le=86400,
        description="How long an agent waits for the rendezvous to complete (torchrun join_timeout).",
    )
    last_call_timeout_seconds: int | None = Field(
        None, ge=0, le=86400,
        description=(
            "Elastic jobs only: how long to wait for more workers once minWorkers have joined "
            "(torchrun last_call_timeout, 30 s when unset). Fixed-size jobs pass N:N and never wait."
        ),
    )


class Checkpoint(Model):
    """The volume mounted into every worker for checkpoints. Either mounts an existing claim
    (claimName) or creates the claim <job>-checkpoints from size, storageClassName, accessModes."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.claimName) || (!has(self.size) && !has(self.storageClassName) && !has(self.accessModes))",
                    "spec.checkpoint.claimName mounts an existing claim: do not also set size, storageClassName or accessModes",
                    ".claimName",
                ),
                cel(
                    "has(self.claimName) || has(self.size)",
                    "spec.checkpoint needs either claimName (an existing claim) or size (a claim to create)",
                    ".size",
                ),
                cel(
                    "!has(self.claimName) || !self.retain",
                    "spec.checkpoint.retain applies to a claim Trainyard creates; an existing claimName is never deleted",
                    ".retain",
                ),
            ]
        }
    )
    mount_path: str = Field(
        "/checkpoints", min_length=1, max_length=1024, pattern=r"^/",
        description="Where the volume is mounted in the trainer container; exported as TRAINYARD_CHECKPOINT_DIR.",
    )
    claim_name: str | None = Field(
        None, min_length=1, max_length=253, description="An existing PersistentVolumeClaim to mount."
    )
    size: str | None = Field(
        None, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$",
        description="Size of the claim to create, e.g. 10Gi.",
    )
    storage_class_name: str | None = Field(
        None, max_length=253, description="Storage class of the claim to create; the cluster default when unset."
    )
    access_modes: list[str] | None = Field(
        None, max_length=4,
        json_schema_extra={"items": {"type": "string", "enum": ["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"]}},
        description="Access modes of the claim to create. Default ReadWriteMany: every worker mounts it.",
    )
    retain: bool = Field(
        False,
        description="Keep the created claim when the job is deleted (it gets no owner reference).",
    )

    @property
    def created_claim(self) -> bool:
        return self.claim_name is None


class FailurePolicy(Model):
    """How failures are handled. Restarts count toward backoffLimit; disruptions (evictions,
    node loss, pods deleted by someone else) are restarted too but never count."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.retryableExitCodes) || (has(self.restartPolicy) && self.restartPolicy == 'ExitCode')",
                    "spec.failurePolicy.retryableExitCodes applies only to restartPolicy ExitCode",
                    ".retryableExitCodes",
                    message_expression=concat(
                        "spec.failurePolicy.retryableExitCodes applies only to restartPolicy ExitCode, and this job "
                        "has restartPolicy ", Expr("self.restartPolicy"),
                        " (OnFailure retries every exit code, Never none): set restartPolicy: ExitCode or remove "
                        "the list"),
                )
            ]
        }
    )

    restart_policy: RestartPolicy = Field(
        RestartPolicy.ON_FAILURE,
        description=(
            "Never: any worker failure fails the job. OnFailure: every failure is restarted until "
            "backoffLimit. ExitCode: only exit codes in retryableExitCodes are restarted."
        ),
    )
    retryable_exit_codes: list[int] | None = Field(
        None, max_length=256, json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 255}},
        description=(
            "ExitCode policy: exit codes that are retried. When unset, signal exits (128 and above) "
            "are retried except 137, which is reported as OOMKilled."
        ),
    )
    restart_scope: RestartScope = Field(
        RestartScope.GANG,
        description=(
            "Gang: any failure replaces every worker with a new rendezvous. Worker (elastic jobs only): "
            "replace just the failed worker and let torchrun re-form the group; a failure of worker 0, "
            "which hosts the rendezvous, still restarts the gang."
        ),
    )
    backoff_limit: int = Field(3, ge=0, le=10000, description="Restarts allowed before the job fails.")
    backoff_seconds: int = Field(
        10, ge=0, le=86400,
        description=(
            "Delay before the second restart; it doubles for each further restart, up to maxBackoffSeconds. "
            "The first restart is immediate."
        ),
    )
    max_backoff_seconds: int = Field(300, ge=0, le=86400, description="Cap on the restart delay.")
    in_place_restarts: int = Field(
        0, ge=0, le=1000,
        description="torchrun --max-restarts: process restarts inside running pods before the pod fails.",
    )

    restart_mode: RestartMode = Field(
        RestartMode.COLD,
        description=(
            "How a restarted gang's processes start. Cold (default): every worker starts afresh (trainyard-launch, "
            "torchrun, the interpreter, import torch). Warm: on a gang restart `trainyard run` keeps one spare "
            "process per worker with torch, torch.distributed, DDP's torch._dynamo and the script's own top-level "
            "imports already imported (at low priority), and a restart hands each rank to a spare, which runs the "
            "unchanged script in itself with torchrun's environment and an env:// rendezvous on a fresh port; spares "
            "are replaced in the background. A command a spare cannot run (another program than trainyard-launch, "
            "torchrun or python, torchrun flags beyond --nnodes and --nproc-per-node 1) restarts cold, with an event "
            "saying why. With inPlaceRestarts >= 1 and the command trainyard-launch, the in-place restarts are warm "
            "too, on Kubernetes as on a workstation: trainyard-launch runs the rank in a spare of its own and restarts "
            "every rank in its pod, coordinated by worker 0's launcher, without torchrun (a pod's restart past "
            "inPlaceRestarts is an ordinary failure). Needs a fixed-size torchrun job with procsPerWorker 1 "
            "(docs/recovery.md)."
        ),
    )

    def backoff_delay(self, restart_number: int) -> float:
        """Seconds to wait before launching the gang of restart number `restart_number` (1-based)."""
        if restart_number <= 1 or self.backoff_seconds == 0:
            return 0.0
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (restart_number - 2)))

    def is_retryable(self, exit_code: int | None, oom: bool, hung: bool = False) -> bool:
        if self.restart_policy == RestartPolicy.NEVER:
            return False
        if self.restart_policy == RestartPolicy.ON_FAILURE or hung:
            return True
        if self.retryable_exit_codes is not None:
            return exit_code in self.retryable_exit_codes
        # On Kubernetes 137 means OOM (workers.from_pod marks it); a local SIGKILL is just a signal.
        return not oom and exit_code is not None and exit_code >= 128


class RunPolicy(Model):
    """Lifetime and scheduling of the job as a whole."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.firstProgressDeadlineSeconds) || has(self.progressDeadlineSeconds)",
                    "spec.runPolicy.firstProgressDeadlineSeconds needs spec.runPolicy.progressDeadlineSeconds: it is "
                    "the startup budget of hang detection, which that deadline turns on",
                    ".firstProgressDeadlineSeconds",
                )
            ]
        }
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, le=MAX_DURATION_SECONDS,
        description="Fail the job this long after it started running (the clock restarts on resume). At most a year.",
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, le=MAX_DURATION_SECONDS,
        description="Delete the finished job (and its children) this long after it finished. At most a year.",
    )
    startup_deadline_seconds: int = Field(
        600, ge=1, le=MAX_DURATION_SECONDS,
        description=(
            "How long a worker may stay unschedulable or stuck pulling its image "
            "(ImagePullBackOff, ErrImagePull, CreateContainerConfigError) before the job fails. At most a year."
        ),
    )
    progress_deadline_seconds: int | None = Field(
        None, ge=1, le=MAX_DURATION_SECONDS,
        description=(
            "Restart the gang with reason Hung (counted as a restart) when it reports no training step for this "
            "long. Rank 0 reports its steps through the trainer library (trainyard_trainer.progress) into the job's "
            "Lease at most every 10 s, so make it longer than the slowest step plus 10 s. A gang's start (until its "
            "first step, and after every trainer restart) has its own budget, firstProgressDeadlineSeconds. "
            "trainyard-launch's watchdog and a liveness probe are a backstop 30 and 60 s later. At most a year."
        ),
    )
    first_progress_deadline_seconds: int | None = Field(
        None, ge=1, le=MAX_DURATION_SECONDS,
        description=(
            "The startup budget of hang detection: how long a gang may take from the start of its last worker (or "
            "of a restarted trainer) to its first training step before it is restarted with reason Hung. Default: "
            "progressDeadlineSeconds, but at least 600. Needs progressDeadlineSeconds. At most a year."
        ),
    )
    suspend: bool = Field(False, description="Delete the workers and pause the job; resuming is not a restart.")
    clean_pod_policy: CleanPodPolicy = Field(
        CleanPodPolicy.RUNNING,
        description=(
            "Which pods to delete when the job finishes. Running (default): only those still running, "
            "so failed workers keep their logs. All: every pod. None: leave them."
        ),
    )
    scheduler_name: str | None = Field(None, max_length=253, description="schedulerName for the worker pods.")
    priority_class_name: str | None = Field(None, max_length=253, description="priorityClassName for the worker pods.")

    @property
    def first_progress_budget(self) -> int | None:
        """The startup budget of hang detection (None: no hang detection)."""
        if self.progress_deadline_seconds is None:
            return None
        if self.first_progress_deadline_seconds is not None:
            return self.first_progress_deadline_seconds
        return max(DEFAULT_FIRST_PROGRESS_SECONDS, self.progress_deadline_seconds)


class DistributedTrainingJobSpec(Model):
    """What to run: N torchrun workers of the pod template, and how to recover them."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.workers) || has(self.elastic)",
                    "spec.workers is required unless spec.elastic is set",
                    ".workers",
                ),
                cel(
                    "!has(self.elastic) || !has(self.workers) || "
                    "(self.workers >= self.elastic.minWorkers && self.workers <= self.elastic.maxWorkers)",
                    "spec.workers must lie within spec.elastic.minWorkers and spec.elastic.maxWorkers",
                    ".workers",
                    # what `kubectl scale` prints: the bounds and the value asked for
                    message_expression=concat(
                        "spec.workers must lie within spec.elastic.minWorkers and spec.elastic.maxWorkers (",
                        int_text("self.elastic.minWorkers", MAX_WORKERS), " to ",
                        int_text("self.elastic.maxWorkers", MAX_WORKERS), "); ",
                        int_text("self.workers", MAX_WORKERS), " was asked for"),
                ),
                cel(
                    "!has(self.failurePolicy) || !has(self.failurePolicy.restartScope) || "
                    "self.failurePolicy.restartScope != 'Worker' || has(self.elastic)",
                    "spec.failurePolicy.restartScope Worker needs spec.elastic: a fixed-size torchrun group "
                    "cannot take a replacement worker",
                    ".failurePolicy.restartScope",
                ),
                cel(
                    "!has(self.runtime) || self.runtime != 'tensorflow' || (!has(self.elastic) && "
                    "(!has(self.procsPerWorker) || self.procsPerWorker == 1))",
                    "spec.runtime tensorflow runs one fixed-size MultiWorkerMirroredStrategy group: one process per "
                    "worker (procsPerWorker 1) and no spec.elastic",
                    ".runtime",
                ),
                cel(
                    "!has(self.runtime) || self.runtime != 'tensorflow' || !has(self.failurePolicy) || "
                    "((!has(self.failurePolicy.restartScope) || self.failurePolicy.restartScope == 'Gang') && "
                    "(!has(self.failurePolicy.inPlaceRestarts) || self.failurePolicy.inPlaceRestarts == 0))",
                    "spec.runtime tensorflow recovers by gang restarts only: MultiWorkerMirroredStrategy cannot take "
                    "a replacement worker nor restart one in place (restartScope Gang, inPlaceRestarts 0)",
                    ".failurePolicy",
                ),
                cel(
                    "!has(self.failurePolicy) || !has(self.failurePolicy.restartScope) || "
                    "self.failurePolicy.restartScope != 'Worker' || "
                    "(has(self.failurePolicy.inPlaceRestarts) && self.failurePolicy.inPlaceRestarts >= 1)",
                    "spec.failurePolicy.restartScope Worker needs spec.failurePolicy.inPlaceRestarts of at least 1: "
                    "the survivors' torchrun agents must restart their processes in place to take the replacement "
                    "in; with 0 they exit, and every survivor is replaced in turn",
                    ".failurePolicy.inPlaceRestarts",
                ),
                cel(
                    "!has(self.failurePolicy) || !has(self.failurePolicy.restartMode) || "
                    "self.failurePolicy.restartMode != 'Warm' || ((!has(self.runtime) || self.runtime == 'torchrun') && "
                    "!has(self.elastic) && (!has(self.procsPerWorker) || self.procsPerWorker == 1))",
                    "spec.failurePolicy.restartMode Warm hands each rank of a fixed-size group to a spare process: it "
                    "needs runtime torchrun, no spec.elastic and procsPerWorker 1 (those need torchrun's agent, which "
                    "a spare does without)",
                    ".failurePolicy.restartMode",
                ),
            ]
        }
    )
    runtime: Runtime = Field(
        Runtime.TORCHRUN,
        description=(
            "What runs in each worker. torchrun (default): trainyard-launch starts torchrun with the PET_* "
            "rendezvous. tensorflow: trainyard-launch starts the script itself with TF_CONFIG listing every worker "
            "(MultiWorkerMirroredStrategy), one process per worker, gang restarts only. Horovod is not supported: "
            "migrate to torchrun (docs/frameworks.md). Changes only while the job is Suspended."
        ),
    )
    workers: int | None = Field(
        None, ge=1, le=MAX_WORKERS,
        description="Desired number of worker pods. Scalable (kubectl scale, an HPA) within spec.elastic; a "
        "fixed-size job's changes only while it is Suspended. Defaults to elastic.maxWorkers for elastic jobs, but the "
        "scale subresource reads this field: set it to scale the job.",
    )
    elastic: ElasticPolicy | None = Field(
        None, description="Makes the job elastic: torchrun PET_NNODES=min:max. Changes only while the job is Suspended.")
    procs_per_worker: int = Field(
        1, ge=1, le=1024,
        description="Processes per worker: torchrun --nproc-per-node. Changes only while the job is Suspended.",
    )
    rendezvous: Rendezvous = Field(default_factory=Rendezvous, json_schema_extra={"default": {}}, description="torchrun rendezvous settings.")
    checkpoint: Checkpoint | None = Field(
        None, description="Checkpoint volume shared by every worker and attempt. Changes only while the job is Suspended.")
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, json_schema_extra={"default": {}}, description="Restart rules.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, json_schema_extra={"default": {}}, description="Deadlines, TTL, suspend and cleanup.")
    template: dict[str, Any] = Field(
        json_schema_extra={"x-trainyard-schema": "template"},
        description="Pod template for every worker. It must have a container named 'trainer'. Changes only while "
                    "the job is Suspended.",
    )

    @property
    def desired_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        assert self.elastic is not None
        return self.elastic.max_workers

    @property
    def nnodes(self) -> str:
        if self.elastic:
            return f"{self.elastic.min_workers}:{self.elastic.max_workers}"
        return f"{self.desired_workers}:{self.desired_workers}"
