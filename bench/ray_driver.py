"""Ray Train driver for P4, run by bench/.venv-ray's python (ray[train] from PyPI lives in its own
virtualenv so that it never changes the project's; a .pth there appends the project venv's
site-packages, so torch, scikit-learn and trainyard_trainer are the very same installs).

    python -m bench.ray_driver OUT_DIR CHECKPOINT_DIR WORKERS MAX_FAILURES -- TRAIN_DIGITS_ARGS...

Runs trainyard_trainer.examples.train_digits unchanged inside a TorchTrainer: Ray starts the
workers and their gloo process group (so the script's own init_process_group is skipped: Ray
already made the group), FailureConfig(max_failures) restarts the worker group after a worker
dies, and the script resumes from its own checkpoints in CHECKPOINT_DIR (the same Checkpointer as
under Trainyard). Each worker process writes its stdout to OUT_DIR/rank<R>-pid<PID>.log (line
buffered) and its pid to OUT_DIR/pid-rank<R>, so the harness can read progress lines and kill a
worker exactly as it does for the Trainyard runtime.
"""

from __future__ import annotations

import os
import sys


def loop(config: dict) -> None:
    import torch.distributed as dist
    from ray import train

    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    out = config["out"]
    sys.stdout = open(os.path.join(out, f"rank{rank}-pid{os.getpid()}.log"), "w", buffering=1)  # noqa: SIM115
    tmp = os.path.join(out, f".pid-rank{rank}")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(out, f"pid-rank{rank}"))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), TRAINYARD_CHECKPOINT_DIR=config["ckpt"])
    init = dist.init_process_group
    dist.init_process_group = lambda *a, **k: None if dist.is_initialized() else init(*a, **k)
    dist.destroy_process_group = lambda *a, **k: None  # Ray owns the group and tears it down

    from trainyard_trainer.examples import train_digits

    train_digits.main(config["args"])


def main() -> int:
    sep = sys.argv.index("--")
    out, ckpt, workers, max_failures = sys.argv[1:sep]
    args = sys.argv[sep + 1:]
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(num_cpus=int(workers), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}})
    trainer = TorchTrainer(
        loop,
        train_loop_config={"out": out, "ckpt": ckpt, "args": args},
        scaling_config=ScalingConfig(num_workers=int(workers), use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="bench-p4", storage_path=os.path.join(out, "ray-storage"),
                             failure_config=FailureConfig(max_failures=int(max_failures))),
    )
    trainer.fit()
    print("[ray_driver] fit finished", flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
