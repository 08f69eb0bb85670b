"""The DistributedTrainingJob API (trainyard.dev/v1alpha1).

These pydantic models are the single source of truth: the CRD in crds/ is generated from them
(`make crds`), their descriptions become `kubectl explain` text, and the CEL rules attached here
through `x-kubernetes-validations` are what the apiserver enforces. The operator and the local
runtime parse objects with the same models, so anything the schema lets through is re-checked
by pydantic and turned into a Failed condition instead of a crash.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "trainyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DistributedTrainingJob"
PLURAL = "distributedtrainingjobs"
SINGULAR = "distributedtrainingjob"
SHORT_NAMES = ["dtj"]

TRAINER_CONTAINER = "trainer"
# Hostnames are "<job>-<attempt>-<index>" and must fit a 63-character DNS label. 48 leaves room
# for a 7-digit attempt and a 6-digit index.
MAX_NAME_LENGTH = 48
RESERVED_ENV_NAMES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")
RESERVED_ENV_PREFIXES = ("PET_", "TRAINYARD_")


def _cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict:
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=False,
    )

    def dump(self) -> dict[str, Any]:
        """The Kubernetes (camelCase) form, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class RestartPolicy(StrEnum):
    NEVER = "Never"
    ON_FAILURE = "OnFailure"
    EXIT_CODE = "ExitCode"


class RestartScope(StrEnum):
    GANG = "Gang"
    WORKER = "Worker"


class CleanPodPolicy(StrEnum):
    RUNNING = "Running"
    ALL = "All"
    NONE = "None"


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


class ElasticPolicy(_Model):
    """Bounds for an elastic job. torchrun gets PET_NNODES=min:max and re-forms the group when
    workers join or leave; spec.workers is the desired count within these bounds."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.minWorkers <= self.maxWorkers",
                    "spec.elastic.minWorkers must not exceed spec.elastic.maxWorkers",
                    ".minWorkers",
                )
            ]
        }
    )
    min_workers: int = Field(ge=1, le=100000, description="Fewest workers the job can train with.")
    max_workers: int = Field(ge=1, le=100000, description="Most workers the job can train with.")


class Rendezvous(_Model):
    """torchrun c10d rendezvous settings. Worker 0 hosts the rendezvous store."""

    port: int = Field(29400, ge=1, le=65535, description="TCP port of the c10d rendezvous store on worker 0.")
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


class Checkpoint(_Model):
    """The volume mounted into every worker for checkpoints. Either mounts an existing claim
    (claimName) or creates the claim <job>-checkpoints from size, storageClassName, accessModes."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.claimName) || (!has(self.size) && !has(self.storageClassName) && !has(self.accessModes))",
                    "spec.checkpoint.claimName mounts an existing claim: do not also set size, storageClassName or accessModes",
                    ".claimName",
                ),
                _cel(
                    "has(self.claimName) || has(self.size)",
                    "spec.checkpoint needs either claimName (an existing claim) or size (a claim to create)",
                    ".size",
                ),
                _cel(
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


class FailurePolicy(_Model):
    """How failures are handled. Restarts count toward backoffLimit; disruptions (evictions,
    node loss, pods deleted by someone else) are restarted too but never count."""

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


class RunPolicy(_Model):
    """Lifetime and scheduling of the job as a whole."""

    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the job this long after it started running (the clock restarts on resume)."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the finished job (and its children) this long after it finished."
    )
    startup_deadline_seconds: int = Field(
        600, ge=1,
        description=(
            "How long a worker may stay unschedulable or stuck pulling its image "
            "(ImagePullBackOff, ErrImagePull, CreateContainerConfigError) before the job fails."
        ),
    )
    progress_deadline_seconds: int | None = Field(
        None, ge=1,
        description=(
            "Declare the job hung when no worker reports training progress (the trainer library's heartbeat) "
            "for this long, and restart the gang with reason Hung (counted as a restart). The clock starts when "
            "a worker starts, so a hang in the rendezvous is caught too: make it longer than a gang's startup."
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


_CONTAINER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 63},
        "env": {
            "type": "array",
            "maxItems": 512,
            "items": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "required": ["name"],
                "properties": {"name": {"type": "string", "maxLength": 253}},
            },
        },
    },
}

_RESERVED_ENV_CEL = (
    "self.all(c, !has(c.env) || c.env.all(e, !(e.name.startsWith('PET_') || e.name.startsWith('TRAINYARD_')"
    " || e.name in ['MASTER_ADDR', 'MASTER_PORT', 'WORLD_SIZE', 'RANK'])))"
)

# The pod template is kept open (preserve-unknown-fields) so any valid PodSpec passes, but the
# parts CEL must see (containers, their names and env names) are typed.
TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Pod template for every worker. It must have a container named 'trainer'.",
    "required": ["spec"],
    "properties": {
        "metadata": {
            "type": "object",
            "description": "Labels and annotations copied onto every worker pod.",
            "x-kubernetes-preserve-unknown-fields": True,
        },
        "spec": {
            "type": "object",
            "description": "A core/v1 PodSpec. restartPolicy is always Never: Trainyard does the restarting.",
            "x-kubernetes-preserve-unknown-fields": True,
            "required": ["containers"],
            "x-kubernetes-validations": [
                _cel(
                    "self.containers.exists(c, c.name == 'trainer')",
                    "spec.template.spec.containers must include a container named 'trainer'",
                    ".containers",
                )
            ],
            "properties": {
                "containers": {
                    "type": "array",
                    "maxItems": 32,
                    "items": _CONTAINER_SCHEMA,
                    "x-kubernetes-validations": [
                        _cel(
                            _RESERVED_ENV_CEL,
                            "spec.template.spec.containers[].env must not set PET_*, TRAINYARD_*, MASTER_ADDR, "
                            "MASTER_PORT, WORLD_SIZE or RANK: Trainyard sets them for the rendezvous",
                        )
                    ],
                },
            },
        },
    },
}


class DistributedTrainingJobSpec(_Model):
    """What to run: N torchrun workers of the pod template, and how to recover them."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.workers) || has(self.elastic)",
                    "spec.workers is required unless spec.elastic is set",
                    ".workers",
                ),
                _cel(
                    "!has(self.elastic) || !has(self.workers) || "
                    "(self.workers >= self.elastic.minWorkers && self.workers <= self.elastic.maxWorkers)",
                    "spec.workers must lie within spec.elastic.minWorkers and spec.elastic.maxWorkers",
                    ".workers",
                ),
                _cel(
                    "!has(self.failurePolicy) || !has(self.failurePolicy.restartScope) || "
                    "self.failurePolicy.restartScope != 'Worker' || has(self.elastic)",
                    "spec.failurePolicy.restartScope Worker needs spec.elastic: a fixed-size torchrun group "
                    "cannot take a replacement worker",
                    ".failurePolicy.restartScope",
                ),
            ]
        }
    )
    workers: int | None = Field(
        None, ge=1, le=100000,
        description="Desired number of worker pods. Scalable (kubectl scale) within spec.elastic. "
        "Defaults to elastic.maxWorkers for elastic jobs.",
    )
    elastic: ElasticPolicy | None = Field(None, description="Makes the job elastic: torchrun PET_NNODES=min:max.")
    procs_per_worker: int = Field(1, ge=1, le=1024, description="Processes per worker: torchrun --nproc-per-node.")
    rendezvous: Rendezvous = Field(default_factory=Rendezvous, json_schema_extra={"default": {}}, description="torchrun rendezvous settings.")
    checkpoint: Checkpoint | None = Field(None, description="Checkpoint volume shared by every worker and attempt.")
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, json_schema_extra={"default": {}}, description="Restart rules.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, json_schema_extra={"default": {}}, description="Deadlines, TTL, suspend and cleanup.")
    template: dict[str, Any] = Field(
        json_schema_extra={"x-trainyard-schema": "template"},
        description="Pod template for every worker. It must have a container named 'trainer'.",
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


class Condition(_Model):
    """A standard Kubernetes condition."""

    type: str = Field(description="Created, Running, Restarting, Suspended, Succeeded or Failed.")
    status: str = Field(description="True, False or Unknown.", json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str = Field("", description="A CamelCase reason, one of the documented constants.")
    message: str = Field("", description="What happened, and what to do about it.")
    last_transition_time: datetime | None = Field(None, description="When status last changed.")


class WorkerCounts(_Model):
    """Worker pods of the current attempt."""

    desired: int = Field(0, description="Workers the job wants.")
    active: int = Field(0, description="Pods that exist and have not finished (pending or running).")
    ready: int = Field(0, description="Pods that are running and ready.")
    succeeded: int = Field(0, description="Pods whose trainer exited 0.")
    failed: int = Field(0, description="Pods that failed.")


class DistributedTrainingJobStatus(_Model):
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
    backoff_until: datetime | None = Field(None, description="The next attempt's workers are created at this time.")
    start_time: datetime | None = Field(None, description="When the job (or its last resume) started.")
    completion_time: datetime | None = Field(None, description="When the job succeeded or failed.")
    observed_generation: int | None = Field(None, description="The spec generation this status describes.")
    message: str | None = Field(None, description="A one-line summary of the current state.")

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class ObjectMeta(BaseModel):
    """The subset of metadata the engine reads."""

    model_config = ConfigDict(extra="ignore")
    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 1
    creationTimestamp: datetime | None = None
    deletionTimestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    resourceVersion: str | None = None


class DistributedTrainingJob(BaseModel):
    """A DistributedTrainingJob, as the operator and the local runtime read it."""

    model_config = ConfigDict(extra="ignore")
    apiVersion: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: DistributedTrainingJobSpec
    status: DistributedTrainingJobStatus = Field(default_factory=DistributedTrainingJobStatus)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> DistributedTrainingJob:
        data = dict(obj)
        data["status"] = data.get("status") or {}
        return cls.model_validate(data)


def trainer_container(template: dict[str, Any]) -> dict[str, Any] | None:
    for c in (template.get("spec") or {}).get("containers") or []:
        if c.get("name") == TRAINER_CONTAINER:
            return c
    return None


def semantic_errors(job: DistributedTrainingJob) -> list[str]:
    """The same rules the CRD's CEL enforces, for objects that did not pass through the apiserver
    (the local runtime) or slipped past an older CRD. Each message names the field."""
    errs: list[str] = []
    spec = job.spec
    name = job.metadata.name
    if len(name) > MAX_NAME_LENGTH:
        errs.append(f"metadata.name must be at most {MAX_NAME_LENGTH} characters (worker hostnames are "
                    f"<name>-<attempt>-<index>), got {len(name)}")
    if spec.workers is None and spec.elastic is None:
        errs.append("spec.workers is required unless spec.elastic is set")
    if spec.elastic:
        if spec.elastic.min_workers > spec.elastic.max_workers:
            errs.append("spec.elastic.minWorkers must not exceed spec.elastic.maxWorkers")
        elif spec.workers is not None and not (spec.elastic.min_workers <= spec.workers <= spec.elastic.max_workers):
            errs.append("spec.workers must lie within spec.elastic.minWorkers and spec.elastic.maxWorkers")
    if spec.failure_policy.restart_scope == RestartScope.WORKER and spec.elastic is None:
        errs.append("spec.failurePolicy.restartScope Worker needs spec.elastic")
    trainer = trainer_container(spec.template)
    if trainer is None:
        errs.append("spec.template.spec.containers must include a container named 'trainer'")
    for c in (spec.template.get("spec") or {}).get("containers") or []:
        for e in c.get("env") or []:
            n = str(e.get("name", ""))
            if n.startswith(RESERVED_ENV_PREFIXES) or n in RESERVED_ENV_NAMES:
                errs.append(f"spec.template.spec.containers[{c.get('name')}].env[{n}] is reserved: Trainyard sets it")
    return errs
