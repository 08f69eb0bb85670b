"""The environment every backend gives a worker: torchrun reads PET_*, the trainer library
TRAINYARD_* (names in `trainyard.api.contract`)."""

from __future__ import annotations

from ..api import DistributedTrainingJob, RestartScope
from ..api import contract as C
from ..api.names import rendezvous_id
from .plan import Launch


def rendezvous_conf(job: DistributedTrainingJob, is_host: bool) -> str:
    rdzv = job.spec.rendezvous
    parts = [f"join_timeout={rdzv.join_timeout_seconds}"]
    if rdzv.last_call_timeout_seconds is not None:
        parts.append(f"last_call_timeout={rdzv.last_call_timeout_seconds}")
    # Say who hosts the store instead of letting torchrun guess from hostnames, which fails when
    # the endpoint is a Service FQDN that does not match the pod's own hostname.
    parts.append(f"is_host={'true' if is_host else 'false'}")
    return ",".join(parts)


def worker_env(job: DistributedTrainingJob, launch: Launch, endpoint_host: str, port: int,
               checkpoint_dir: str | None, heartbeat_file: str | None = None) -> list[dict[str, str]]:
    spec = job.spec
    env = [
        (C.PET_NNODES, spec.nnodes),
        (C.PET_NPROC_PER_NODE, str(spec.procs_per_worker)),
        (C.PET_RDZV_BACKEND, "c10d"),
        (C.PET_RDZV_ENDPOINT, f"{endpoint_host}:{port}"),
        (C.PET_RDZV_ID, rendezvous_id(job.metadata.uid, launch.rendezvous_attempt)),
        (C.PET_RDZV_CONF, rendezvous_conf(job, launch.index == 0)),
        (C.PET_MAX_RESTARTS, str(spec.failure_policy.in_place_restarts)),
        (C.ENV_JOB_NAME, job.metadata.name),
        (C.ENV_WORKER_INDEX, str(launch.index)),
        (C.ENV_ATTEMPT, str(launch.attempt)),
    ]
    if checkpoint_dir is not None:
        env.append((C.ENV_CHECKPOINT_DIR, checkpoint_dir))
    if spec.failure_policy.restart_scope == RestartScope.WORKER:
        # A replacement joins the survivors' rendezvous; torch 2.13's agents share its TCP store with
        # the workers and then wait on a key the replacement never writes (pytorch#135712, #147064).
        env.append(("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1"))
    deadline = spec.run_policy.progress_deadline_seconds
    if deadline is not None and heartbeat_file is not None:
        env.append((C.ENV_HEARTBEAT_FILE, heartbeat_file))
        env.append((C.ENV_PROGRESS_DEADLINE, str(deadline)))
    return [{"name": k, "value": v} for k, v in env]
