"""Condition types and reason constants. Users alert and script on these strings: never rename one."""

# Condition types
CREATED = "Created"
RUNNING = "Running"
RESTARTING = "Restarting"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
CONDITION_TYPES = (CREATED, RUNNING, RESTARTING, SUSPENDED, SUCCEEDED, FAILED)

# Reasons
WORKERS_CREATED = "WorkersCreated"
WORKERS_PENDING = "WorkersPending"
ALL_WORKERS_RUNNING = "AllWorkersRunning"
ALL_WORKERS_SUCCEEDED = "AllWorkersSucceeded"
WORKER_FAILED = "WorkerFailed"  # a retryable failure (restart) or, with restartPolicy Never, the end
NON_RETRYABLE_EXIT_CODE = "NonRetryableExitCode"
OOM_KILLED = "OOMKilled"
HUNG = "Hung"  # no training progress within runPolicy.progressDeadlineSeconds
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
# Workers that cannot start: the pod's own waiting reason is reported as is.
UNSCHEDULABLE = "Unschedulable"
STUCK_REASONS = ("ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName")
# Waiting reasons that will never fix themselves: fail at once, not at the startup deadline.
PERMANENT_STUCK_REASONS = ("InvalidImageName",)
