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
ENV_WORKER_INDEX = "TRAINYARD_WORKER_INDEX"
ENV_ATTEMPT = "TRAINYARD_ATTEMPT"
ENV_CHECKPOINT_DIR = "TRAINYARD_CHECKPOINT_DIR"
ENV_HEARTBEAT_FILE = "TRAINYARD_HEARTBEAT_FILE"
ENV_PROGRESS_DEADLINE = "TRAINYARD_PROGRESS_DEADLINE_SECONDS"

# spec.runtime tensorflow: trainyard-launch runs the script itself (no torchrun) once every
# TF_CONFIG host resolves, waiting up to the join timeout.
ENV_RUNTIME = "TRAINYARD_RUNTIME"
ENV_JOIN_TIMEOUT = "TRAINYARD_JOIN_TIMEOUT_SECONDS"
TF_CONFIG = "TF_CONFIG"

# Warm spares (trainyard_trainer.warm): the socket a spare talks to the runtime on, the nice value
# of its warm-up thread, and (benchmarks) timestamped phase lines of a warm start.
# spec.failurePolicy.restartMode Warm: trainyard-launch restarts in place (inPlaceRestarts) with warm spares.
ENV_RESTART_MODE = "TRAINYARD_RESTART_MODE"
ENV_WARM_FD = "TRAINYARD_WARM_FD"
ENV_WARM_NICE = "TRAINYARD_WARM_NICE"
ENV_WARM_TRACE = "TRAINYARD_WARM_TRACE"
WARM_ENV_NAMES = (ENV_WARM_FD, ENV_WARM_NICE, ENV_WARM_TRACE)

TRAINER_ENV_NAMES = (ENV_JOB_NAME, ENV_WORKER_INDEX, ENV_ATTEMPT, ENV_CHECKPOINT_DIR, ENV_HEARTBEAT_FILE,
                     ENV_PROGRESS_DEADLINE, ENV_RUNTIME, ENV_JOIN_TIMEOUT, ENV_RESTART_MODE)

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
