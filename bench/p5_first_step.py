"""P5 time to first step on the workstation runtime (`trainyard.local.runner.Runner`, what `trainyard run`
drives): 2 workers of trainyard_trainer.examples.train_digits (DDP, gloo, CPU), each a real
`trainyard-launch` -> torchrun -> python process tree on this machine.

Measured from the moment the runtime has started the last worker process (Popen returned) to the
moment it reads the first `[trainyard] step=1 ...` line from rank 0's log (polled every 10 ms).
That span holds the interpreter and torch start-up in every worker, torchrun's c10d rendezvous,
the process-group and DDP set-up, data loading and one step; only the rendezvous differs between:

- nn (Trainyard): PET_NNODES=2:2, what Trainyard passes for a fixed-size job;
- elastic-1:2: PET_NNODES=1:2 with torchrun's default last_call_timeout (30 s; no
  last_call_timeout in PET_RDZV_CONF), the same 2 workers. The c10d rendezvous completes as soon
  as max_nodes (2) have joined, so with both workers started together the last call should not
  be waited out;
- elastic-1:3: PET_NNODES=1:3, default last_call_timeout, the same 2 workers: max is never
  reached, so the rendezvous waits out the last call once min (1) has joined - what a job whose
  max is above the workers it actually gets pays at every (re)start.

Everything else (command, env, ports: a fresh rendezvous port per run) is the runtime's own; the
override is a LocalBackend subclass that rewrites PET_NNODES only.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from trainyard.api import DistributedTrainingJob
from trainyard.local.backend import LocalBackend, LocalWorker
from trainyard.local.runner import Runner

from .common import Result, column, interleave, log, paired_ratios, stats

WORKERS = 2


def job(name: str) -> DistributedTrainingJob:
    return DistributedTrainingJob.from_dict({
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": name, "namespace": "local", "uid": f"bench-{name}-{time.time_ns()}"},
        "spec": {
            "workers": WORKERS,
            "failurePolicy": {"restartPolicy": "Never"},
            "template": {"spec": {"containers": [{
                "name": "trainer", "image": "trainyard/trainer:bench",
                "command": ["trainyard-launch", "-m", "trainyard_trainer.examples.train_digits"],
                "args": ["--max-steps", "5", "--log-every", "1", "--checkpoint-every", "0"]}]}},
        },
    })


class Backend(LocalBackend):
    nnodes: str | None = None
    started_at: float | None = None

    def env(self, job, launch, heartbeat):  # type: ignore[override]
        env = super().env(job, launch, heartbeat)
        if self.nnodes:
            env["PET_NNODES"] = self.nnodes
        return env

    def create(self, job, launches):  # type: ignore[override]
        super().create(job, launches)
        if launches:
            self.started_at = time.monotonic()


def trial(nnodes: str | None, timeout: float = 180) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p5-"))
    first: list[float] = []

    def on_line(w: LocalWorker, line: str) -> None:
        if not first and "[trainyard] step=" in line:
            first.append(time.monotonic())

    j = job("p5")
    runner = Runner(j, tmp / "work", tmp / "ckpt", tick=0.01, on_line=on_line, backend_class=Backend)
    backend = runner.backend
    assert isinstance(backend, Backend)
    backend.nnodes = nnodes
    deadline = time.monotonic() + timeout
    try:
        while runner.step():
            if first or time.monotonic() > deadline:
                break
            time.sleep(runner.tick)
    finally:
        runner.backend.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    if not first or backend.started_at is None:
        raise RuntimeError(f"no step line within {timeout}s (phase {runner.job.status.phase})")
    return {"first_step_s": first[0] - backend.started_at}


def run(rounds: int = 5) -> Result:
    res = Result("p5_first_step", "P5 time to first step, 2 local workers: N:N vs elastic last call",
                 workload=f"train_digits, {WORKERS} workers x 1 proc, gloo/CPU, first step line; "
                          f"{rounds} interleaved rounds after one warm-up run of nn",
                 method=__doc__ or "")
    contenders: dict[str, Any] = {
        "nn": lambda r: trial(None),
        "elastic-1:2": lambda r: trial("1:2"),
        "elastic-1:3": lambda r: trial("1:3"),
    }
    log(f"P5 first step: {', '.join(contenders)} x {rounds} rounds")
    log(f"  warm-up (page cache): nn {trial(None)}")
    trials = interleave(contenders, rounds, warmup=0)
    res.trials = trials
    nn = column(trials["nn"], "first_step_s")
    for other in ("elastic-1:2", "elastic-1:3"):
        o = column(trials[other], "first_step_s")
        res.row(f"first step: {other} / N:N (trainyard)", paired_ratios(o, nn), "(no target)",
                a=stats(o), b=stats(nn))
    return res
