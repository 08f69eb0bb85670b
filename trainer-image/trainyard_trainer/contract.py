"""The trainer's side of the contract with the operator: the environment it reads and the exit
code it reports a hang with. The operator package keeps its own copy (`trainyard.api.contract`):
this package must install without it. A parity test keeps the two equal."""

ENV_JOB_NAME = "TRAINYARD_JOB_NAME"
ENV_JOB_UID = "TRAINYARD_JOB_UID"  # checkpoints name the job that wrote them (fencing)
ENV_WORKER_INDEX = "TRAINYARD_WORKER_INDEX"
ENV_ATTEMPT = "TRAINYARD_ATTEMPT"
ENV_CHECKPOINT_DIR = "TRAINYARD_CHECKPOINT_DIR"
ENV_HEARTBEAT_FILE = "TRAINYARD_HEARTBEAT_FILE"
ENV_PROGRESS_DEADLINE = "TRAINYARD_PROGRESS_DEADLINE_SECONDS"
ENV_RUNTIME = "TRAINYARD_RUNTIME"  # "tensorflow": run the script itself, no torchrun
ENV_JOIN_TIMEOUT = "TRAINYARD_JOIN_TIMEOUT_SECONDS"
ENV_POD_IP = "TRAINYARD_POD_IP"  # the pod's IP (Kubernetes only): torchrun's --local-addr
TF_CONFIG = "TF_CONFIG"
ENV_FIRST_PROGRESS_DEADLINE = "TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS"
# Where rank 0 reports its progress: "<namespace>/<name>" of the job's Lease (in a pod), or a
# directory with one file per annotation (the local runtime's stand-in for the Lease).
ENV_PROGRESS_LEASE = "TRAINYARD_PROGRESS_LEASE"
ENV_PROGRESS_DIR = "TRAINYARD_PROGRESS_DIR"
ENV_PROGRESS_INTERVAL = "TRAINYARD_PROGRESS_INTERVAL_SECONDS"

# The Lease's annotations: each writer owns one (a JSON object), so merge patches never collide.
ANNOTATION_PROGRESS = "trainyard.dev/progress"  # rank 0's report
ANNOTATION_LAUNCHER = "trainyard.dev/launcher"  # worker 0's launcher, once per start
ANNOTATION_RENDEZVOUS = "trainyard.dev/rendezvous"  # the operator: worker 0's pod IP for this attempt
PROGRESS_FIELDS = ("attempt", "worker", "time", "step", "training", "totalSteps", "loss", "samplesPerSecond",
                   "stepsPerSecond", "startStep", "startTime", "checkpointStep", "checkpointTime", "metrics")
LAUNCHER_FIELDS = ("attempt", "time")
RENDEZVOUS_FIELDS = ("attempt", "ip")
LOCAL_LEASE_FILES = {ANNOTATION_PROGRESS: "progress.json", ANNOTATION_LAUNCHER: "launcher.json"}
PROGRESS_INTERVAL_SECONDS = 10
MAX_PROGRESS_METRICS = 16

# Warm spares (trainyard_trainer.warm): the socket a spare talks to the runtime on, the nice value
# of its warm-up thread, and (benchmarks) timestamped phase lines of a warm start.
# spec.failurePolicy.restartMode Warm: trainyard-launch restarts in place (inPlaceRestarts) with warm spares.
ENV_RESTART_MODE = "TRAINYARD_RESTART_MODE"
ENV_WARM_FD = "TRAINYARD_WARM_FD"
ENV_WARM_NICE = "TRAINYARD_WARM_NICE"
ENV_WARM_TRACE = "TRAINYARD_WARM_TRACE"
WARM_ENV_NAMES = (ENV_WARM_FD, ENV_WARM_NICE, ENV_WARM_TRACE)

# The launcher's exit code when the watchdog finds no training progress (the operator's reason
# Hung), after a line starting with HUNG_MESSAGE_PREFIX on stderr and in the termination log.
HUNG_EXIT_CODE = 86
HUNG_MESSAGE_PREFIX = "Hung: "
# The launcher's exit code when the gang broke under this worker (a peer died, the rendezvous store
# could not be reached, the rendezvous closed or timed out): a consequence the operator does not
# blame on this worker, and never a reason to call the training script broken.
PEER_LOST_EXIT_CODE = 87
