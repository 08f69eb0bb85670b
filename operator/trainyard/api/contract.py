"""The contract between the operator and what runs in a worker: environment names, exit codes
and the work-directory layout of the local runtime.

The trainer library (`trainyard_trainer.contract`) holds its own copy of the names it reads: it
must install without the operator. tests/unit/test_contract_parity.py keeps the two equal.
"""

from __future__ import annotations

# -- what torchrun reads (every torchrun flag defaults from PET_<FLAG>)
PET_NNODES = "PET_NNODES"
PET_NPROC_PER_NODE = "PET_NPROC_PER_NODE"
PET_RDZV_BACKEND = "PET_RDZV_BACKEND"
PET_RDZV_ENDPOINT = "PET_RDZV_ENDPOINT"
PET_RDZV_ID = "PET_RDZV_ID"
PET_RDZV_CONF = "PET_RDZV_CONF"
PET_MAX_RESTARTS = "PET_MAX_RESTARTS"

# -- what the trainer library and trainyard-launch read
ENV_JOB_NAME = "TRAINYARD_JOB_NAME"
ENV_JOB_UID = "TRAINYARD_JOB_UID"  # checkpoints name the job that wrote them (fencing)
ENV_WORKER_INDEX = "TRAINYARD_WORKER_INDEX"
ENV_ATTEMPT = "TRAINYARD_ATTEMPT"
ENV_CHECKPOINT_DIR = "TRAINYARD_CHECKPOINT_DIR"
ENV_HEARTBEAT_FILE = "TRAINYARD_HEARTBEAT_FILE"
ENV_PROGRESS_DEADLINE = "TRAINYARD_PROGRESS_DEADLINE_SECONDS"
# The launcher's watchdog until a (re)started trainer completes its first step (the startup budget).
ENV_FIRST_PROGRESS_DEADLINE = "TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS"
# Where rank 0 reports its progress: "<namespace>/<name>" of the job's Lease (Kubernetes), or the
# local runtime's stand-in for it, a directory with one file per annotation (LOCAL_LEASE_FILES).
ENV_PROGRESS_LEASE = "TRAINYARD_PROGRESS_LEASE"
ENV_PROGRESS_DIR = "TRAINYARD_PROGRESS_DIR"
# Rank 0 sends a report at most this often (seconds; a step that comes later than that after the
# last report is sent at once).
ENV_PROGRESS_INTERVAL = "TRAINYARD_PROGRESS_INTERVAL_SECONDS"

# spec.runtime tensorflow: trainyard-launch runs the script itself (no torchrun) once every
# TF_CONFIG host resolves, waiting up to the join timeout.
ENV_RUNTIME = "TRAINYARD_RUNTIME"
ENV_JOIN_TIMEOUT = "TRAINYARD_JOIN_TIMEOUT_SECONDS"
# The pod's IP (the downward API's status.podIP), set on Kubernetes only: trainyard-launch gives it to
# torchrun as --local-addr, so the rank-0 agent's store is reached by IP. The headless Service
# publishes worker 0 alone, and torchrun's rank 0 is the agent whose address sorts first, which is
# not always worker 0 (a gang of mixed attempts after a scale-up); by IP, no other name is needed.
ENV_POD_IP = "TRAINYARD_POD_IP"
TF_CONFIG = "TF_CONFIG"

# Warm spares (trainyard_trainer.warm): the socket a spare talks to the runtime on, the nice value
# of its warm-up thread, and (benchmarks) timestamped phase lines of a warm start.
# spec.failurePolicy.restartMode Warm: trainyard-launch restarts in place (inPlaceRestarts) with warm spares.
ENV_RESTART_MODE = "TRAINYARD_RESTART_MODE"
ENV_WARM_FD = "TRAINYARD_WARM_FD"
ENV_WARM_NICE = "TRAINYARD_WARM_NICE"
ENV_WARM_TRACE = "TRAINYARD_WARM_TRACE"
WARM_ENV_NAMES = (ENV_WARM_FD, ENV_WARM_NICE, ENV_WARM_TRACE)

TRAINER_ENV_NAMES = (ENV_JOB_NAME, ENV_JOB_UID, ENV_WORKER_INDEX, ENV_ATTEMPT, ENV_CHECKPOINT_DIR, ENV_HEARTBEAT_FILE,
                     ENV_PROGRESS_DEADLINE, ENV_FIRST_PROGRESS_DEADLINE, ENV_PROGRESS_LEASE, ENV_PROGRESS_DIR,
                     ENV_PROGRESS_INTERVAL, ENV_RUNTIME, ENV_JOIN_TIMEOUT, ENV_RESTART_MODE)

# -- progress reports: the job's Lease (coordination.k8s.io/v1, <job>-progress), which only rank 0
# (through the pod's ServiceAccount token, `get` and `patch` on that one object) and the operator
# write. Each writer owns its own annotation, so a JSON merge patch of one never touches another's.
ANNOTATION_PROGRESS = "trainyard.dev/progress"  # rank 0: a JSON object with PROGRESS_FIELDS
ANNOTATION_LAUNCHER = "trainyard.dev/launcher"  # worker 0's trainyard-launch, once per start: {"attempt", "time"}
ANNOTATION_RENDEZVOUS = "trainyard.dev/rendezvous"  # the operator: worker 0's pod IP, {"attempt", "ip"}
PROGRESS_FIELDS = ("attempt", "worker", "time", "step", "training", "totalSteps", "loss", "samplesPerSecond",
                   "stepsPerSecond", "startStep", "startTime", "checkpointStep", "checkpointTime", "metrics")
LAUNCHER_FIELDS = ("attempt", "time")
RENDEZVOUS_FIELDS = ("attempt", "ip")
# The local runtime's stand-in for the Lease: <workdir>/lease/<file> for each annotation.
LOCAL_LEASE_DIR = "lease"
LOCAL_LEASE_FILES = {ANNOTATION_PROGRESS: "progress.json", ANNOTATION_LAUNCHER: "launcher.json"}
# How often rank 0 sends at most when nothing asks for faster (a short progress deadline does).
PROGRESS_INTERVAL_SECONDS = 10
# At most this many extra metrics (report(**metrics)) go into a report, and into status.progress.
MAX_PROGRESS_METRICS = 16

# -- what torch.distributed's env:// initialisation reads. Every worker gets them (engine/env.py
# says which values and why), as PyTorchJob sets them, so a plain `python train.py` that calls
# init_process_group() forms one group; torchrun sets them again for each process it starts.
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
WORLD_SIZE = "WORLD_SIZE"
RANK = "RANK"

# -- names a user may not set (in any container, init container or envFrom prefix): Trainyard
# sets them, and a second value would split or break the rendezvous.
RESERVED_ENV_NAMES = (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, TF_CONFIG)
RESERVED_ENV_PREFIXES = ("PET_", "TRAINYARD_")

# trainyard-launch exits with this code when its heartbeat goes stale (reason Hung), after a
# line starting with HUNG_MESSAGE_PREFIX on stderr and in the termination log.
HUNG_EXIT_CODE = 86
HUNG_MESSAGE_PREFIX = "Hung: "
# trainyard-launch exits with this code when the gang broke under the worker: a peer died, the
# rendezvous store could not be reached, the rendezvous closed or timed out. It is a consequence,
# not the cause: the engine looks for the worker that started it.
PEER_LOST_EXIT_CODE = 87

# -- the local runtime's work directory: <workdir>/attempt-<n>/worker-<i>.log (and .heartbeat)
ATTEMPT_DIR = "attempt-{attempt}"
WORKER_LOG = "worker-{index}.log"
WORKER_HEARTBEAT = "worker-{index}.heartbeat"


def is_reserved_env(name: str) -> bool:
    return name.startswith(RESERVED_ENV_PREFIXES) or name in RESERVED_ENV_NAMES
