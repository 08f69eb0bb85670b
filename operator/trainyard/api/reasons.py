"""Condition types and reason constants. Users alert and script on these strings: never rename one."""

# Condition types
CREATED = "Created"
RUNNING = "Running"
RESTARTING = "Restarting"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
ADMITTED = "Admitted"  # only for a job queued in Kueue (the kueue.x-k8s.io/queue-name label)
CONDITION_TYPES = (CREATED, RUNNING, RESTARTING, SUSPENDED, SUCCEEDED, FAILED, ADMITTED)

# Reasons
WORKERS_CREATED = "WorkersCreated"
WORKERS_PENDING = "WorkersPending"
WAITING_FOR_TRAINING = "WaitingForTraining"  # every pod is up, no training step yet (backends that see progress)
ALL_WORKERS_RUNNING = "AllWorkersRunning"
ALL_WORKERS_SUCCEEDED = "AllWorkersSucceeded"
WORKER_FAILED = "WorkerFailed"  # a retryable failure (restart) or, with restartPolicy Never, the end
NON_RETRYABLE_EXIT_CODE = "NonRetryableExitCode"
OOM_KILLED = "OOMKilled"
HUNG = "Hung"  # no training progress within runPolicy.progressDeadlineSeconds
RENDEZVOUS_FAILED = "RendezvousFailed"  # the gang broke under a worker and nothing else explains it
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
DEADLINE_EXCEEDED = "DeadlineExceeded"
INVALID_SPEC = "InvalidSpec"
JOB_SUSPENDED = "JobSuspended"
JOB_RESUMED = "JobResumed"
SCALED = "Scaled"
# Disruptions: restarted without spending the backoff budget.
EVICTED = "Evicted"
NODE_LOST = "NodeLost"
POD_DELETED = "PodDeleted"
# The apiserver refused to create a child. Invalid objects fail the job at once; the others are
# retried with a backoff until spec.runPolicy.startupDeadlineSeconds.
INVALID_POD_TEMPLATE = "InvalidPodTemplate"  # the pod the template makes is refused (422/400): a field to fix
INVALID_CHECKPOINT_CLAIM = "InvalidCheckpointClaim"  # the claim spec.checkpoint makes is refused
QUOTA_EXCEEDED = "QuotaExceeded"  # a ResourceQuota refuses the pods (or the claim)
CREATE_REFUSED = "CreateRefused"  # any other refusal: admission (a missing PriorityClass or ServiceAccount), ...
# The progress Lease, Role or RoleBinding was refused: a Warning event, never a refusal of the job
# (it trains without progress reports; hang detection falls back to the launcher's watchdog).
PROGRESS_UNAVAILABLE = "ProgressReportingUnavailable"
CLAIM_PENDING = "CheckpointClaimPending"  # the checkpoint claim is not bound
STARTUP_DEADLINE_EXCEEDED = "StartupDeadlineExceeded"  # still Pending after startupDeadlineSeconds, no other reason
# Kueue (a job with the kueue.x-k8s.io/queue-name label): the Admitted condition's reasons.
WAITING_FOR_ADMISSION = "WaitingForAdmission"  # no pod until Kueue admits the job's Workload
KUEUE_ADMITTED = "Admitted"
KUEUE_EVICTED = "Evicted"  # Kueue evicted the Workload: its workers are stopped, it queues again (not a restart)
KUEUE_UNAVAILABLE = "KueueUnavailable"  # the job asks for a queue and Kueue's API is not served: it waits
# Workers that cannot start: the pod's own waiting reason is reported as is.
UNSCHEDULABLE = "Unschedulable"
NODE_NOT_FOUND = "NodeNotFound"  # the template pins spec.nodeName to a node that does not exist
STUCK_REASONS = ("ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName")
# Reasons that will never fix themselves: fail at once, not at the startup deadline.
PERMANENT_STUCK_REASONS = ("InvalidImageName", NODE_NOT_FOUND)
