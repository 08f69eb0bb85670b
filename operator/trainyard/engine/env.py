"""The environment every backend gives a worker: torchrun reads PET_*, the trainer library
TRAINYARD_*, torch.distributed's env:// MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK (names in
`trainyard.api.contract`).

MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK are set in every pod, as PyTorchJob sets them, for a
script started without torchrun (`python train.py` calling init_process_group()): without them it
would fall back to WORLD_SIZE=1 and every worker would train alone while the job "succeeds".
torchrun sets all four again for each process it starts, so they never reach a torchrun script.

- Fixed-size jobs with procsPerWorker 1: one plain process per pod is one rank. MASTER_ADDR is
  worker 0 of the gang, MASTER_PORT the rendezvous port (nothing else listens on it when torchrun
  does not run), WORLD_SIZE the number of workers and RANK the worker's index: the plain script
  forms one group.
- Elastic jobs and procsPerWorker > 1: no plain process can have a correct rank (membership
  changes; several processes share a pod), only torchrun can. WORLD_SIZE and RANK then hold a
  sentence instead of a number, so such a script stops at once, in int() or in
  init_process_group(), with the reason in its traceback, instead of training alone or waiting
  forever for ranks that never come.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..api import DistributedTrainingJob, RestartMode, RestartScope
from ..api import contract as C
from ..api.names import rendezvous_id
from ..api.spec import Runtime
from .plan import Launch

# trainyard-launch's watchdog is the backstop of the engine's hang detection (for when the operator
# is down): it fires this long after the engine would have.
LAUNCHER_BACKSTOP_SECONDS = 30


def report_interval(job: DistributedTrainingJob) -> int:
    """How often rank 0 sends at most: 10 s, or a fifth of a shorter progress deadline (at least 1 s),
    so that the deadline always spans several reports."""
    deadline = job.spec.run_policy.progress_deadline_seconds
    if deadline is None:
        return C.PROGRESS_INTERVAL_SECONDS
    return max(1, min(C.PROGRESS_INTERVAL_SECONDS, deadline // 5))


def rendezvous_conf(job: DistributedTrainingJob, is_host: bool) -> str:
    rdzv = job.spec.rendezvous
    parts = [f"join_timeout={rdzv.join_timeout_seconds}"]
    if rdzv.last_call_timeout_seconds is not None:
        parts.append(f"last_call_timeout={rdzv.last_call_timeout_seconds}")
    # Say who hosts the store instead of letting torchrun guess from hostnames, which fails when
    # the endpoint is a Service FQDN that does not match the pod's own hostname.
    parts.append(f"is_host={'true' if is_host else 'false'}")
    return ",".join(parts)


def torchrun_only(job: DistributedTrainingJob) -> str | None:
    """Why a plain (torchrun-less) process of this job cannot have a rank, or None when it can."""
    spec = job.spec
    if spec.elastic is not None:
        return "this elastic job's ranks change as workers come and go"
    if spec.procs_per_worker > 1:
        return f"procsPerWorker={spec.procs_per_worker} starts that many processes in each worker"
    return None


def distributed_env(job: DistributedTrainingJob, launch: Launch, master_host: str,
                    port: int) -> list[tuple[str, str]]:
    """torch.distributed's env:// variables for a process started without torchrun."""
    env = [(C.MASTER_ADDR, master_host), (C.MASTER_PORT, str(port))]
    why = torchrun_only(job)
    if why is None:
        return env + [(C.WORLD_SIZE, str(job.spec.desired_workers)), (C.RANK, str(launch.index))]
    sentence = f"set by torchrun for each process it starts: {why}; start the script with torchrun or trainyard-launch"
    return env + [(C.WORLD_SIZE, sentence), (C.RANK, sentence)]


def tf_config(peers: Sequence[str], index: int) -> str:
    """MultiWorkerMirroredStrategy's cluster: every worker's host:port in index order, and this one."""
    return json.dumps({"cluster": {"worker": list(peers)}, "task": {"type": "worker", "index": index}},
                      separators=(",", ":"))


def worker_env(job: DistributedTrainingJob, launch: Launch, endpoint_host: str, port: int,
               checkpoint_dir: str | None, heartbeat_file: str | None = None,
               peers: Sequence[str] | None = None, *, progress_lease: str | None = None,
               progress_dir: str | None = None) -> list[dict[str, str]]:
    """`endpoint_host:port`: worker 0's rendezvous store (torchrun); `peers`: host:port of every
    worker of the gang, by index (tensorflow: its TF_CONFIG). `progress_lease` ("<namespace>/<name>",
    Kubernetes) or `progress_dir` (the local runtime's stand-in) is where rank 0 reports its progress."""
    spec = job.spec
    if spec.runtime == Runtime.TENSORFLOW:
        env = [
            (C.ENV_RUNTIME, Runtime.TENSORFLOW.value),
            (C.ENV_JOIN_TIMEOUT, str(spec.rendezvous.join_timeout_seconds)),
            (C.TF_CONFIG, tf_config(peers or [f"{endpoint_host}:{port}"], launch.index)),
        ]
    else:
        env = [
            (C.PET_NNODES, spec.nnodes),
            (C.PET_NPROC_PER_NODE, str(spec.procs_per_worker)),
            (C.PET_RDZV_BACKEND, "c10d"),
            (C.PET_RDZV_ENDPOINT, f"{endpoint_host}:{port}"),
            (C.PET_RDZV_ID, rendezvous_id(job.metadata.uid, launch.rendezvous_attempt)),
            (C.PET_RDZV_CONF, rendezvous_conf(job, launch.index == 0)),
            (C.PET_MAX_RESTARTS, str(spec.failure_policy.in_place_restarts)),
            *distributed_env(job, launch, endpoint_host, port),
        ]
    env += [
        (C.ENV_JOB_NAME, job.metadata.name),
        (C.ENV_JOB_UID, job.metadata.uid),
        (C.ENV_WORKER_INDEX, str(launch.index)),
        (C.ENV_ATTEMPT, str(launch.attempt)),
    ]
    if checkpoint_dir is not None:
        env.append((C.ENV_CHECKPOINT_DIR, checkpoint_dir))
    if spec.failure_policy.restart_mode == RestartMode.WARM:
        # trainyard-launch runs the rank in a warm spare and, with inPlaceRestarts >= 1, restarts the
        # gang's ranks in place itself (trainyard_trainer.inplace) instead of through torchrun's agent.
        env.append((C.ENV_RESTART_MODE, RestartMode.WARM.value))
    if spec.failure_policy.restart_scope == RestartScope.WORKER:
        # A replacement joins the survivors' rendezvous; torch 2.13's agents share its TCP store with
        # the workers and then wait on a key the replacement never writes (pytorch#135712, #147064).
        env.append(("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1"))
    if progress_lease is not None:
        env.append((C.ENV_PROGRESS_LEASE, progress_lease))
    if progress_dir is not None:
        env.append((C.ENV_PROGRESS_DIR, progress_dir))
    if progress_lease is not None or progress_dir is not None:
        env.append((C.ENV_PROGRESS_INTERVAL, str(report_interval(job))))
    deadline, budget = spec.run_policy.progress_deadline_seconds, spec.run_policy.first_progress_budget
    if deadline is not None and budget is not None and heartbeat_file is not None:
        # The launcher's watchdog is the backstop: it fires LAUNCHER_BACKSTOP_SECONDS after the engine would.
        env.append((C.ENV_HEARTBEAT_FILE, heartbeat_file))
        env.append((C.ENV_PROGRESS_DEADLINE, str(deadline + LAUNCHER_BACKSTOP_SECONDS)))
        env.append((C.ENV_FIRST_PROGRESS_DEADLINE, str(budget + LAUNCHER_BACKSTOP_SECONDS)))
    return [{"name": k, "value": v} for k, v in env]
