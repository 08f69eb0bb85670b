"""P4 workstation recovery vs Ray Train, and steady-state throughput vs plain torchrun.

Same script, data and worker count everywhere: trainyard_trainer.examples.train_digits (DDP MLP on
scikit-learn's digits, gloo, CPU), 2 workers x 1 process, OMP_NUM_THREADS=1, checkpoints every 50
steps into a fresh local directory, progress lines at every step.

Recovery (kill -> training resumed):
- trainyard: `trainyard.local.Runner` (what `trainyard run` drives) with the injection
  `worker=1,at-step=150,signal=KILL`: the runtime SIGKILLs worker 1's whole process tree once a
  step line >= 150 is read, the engine restarts the gang (restartPolicy OnFailure; the first restart
  is immediate), the script resumes from its last checkpoint (step 150). Figure: the runtime's own
  `resumed_seconds`, from the kill to the first step line of the new gang.
- ray: Ray Train 2.60 TorchTrainer, ScalingConfig(num_workers=2, CPU), FailureConfig(max_failures=3),
  the script unchanged inside the train loop (bench/ray_driver.py) resuming from its own
  checkpoints; the harness SIGKILLs the rank-1 worker process once rank 0 logged step >= 150, and
  measures from the kill to the first step line written by a new rank-0 worker process.
  --step-delay 0.02 s (both) keeps training going long enough to be killed mid-way.

Throughput: steady-state samples/s of `trainyard.local.Runner` (2 workers: trainyard-launch ->
torchrun --nnodes 2:2, 1 proc each) vs plain `torchrun --standalone --nproc-per-node 2` on the same
script and arguments (no step delay, 40 epochs, no checkpoints): the median of the
`samples_per_s` of the progress lines (every 50 steps), the first one (warm-up) left out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trainyard.api import DistributedTrainingJob
from trainyard.local.injection import Injection
from trainyard.local.runner import Runner

from .common import BENCH, REPO, Result, column, interleave, log, paired_ratios, stats

RAY_VERSION = "2.60.0"
RAY_VENV = BENCH / ".venv-ray"
KILL_AT = 150
REC_ARGS = ["--log-every", "1", "--checkpoint-every", "50", "--step-delay", "0.02"]
TPUT_ARGS = ["--epochs", "40", "--log-every", "50", "--checkpoint-every", "0"]
STEP = re.compile(r"\[trainyard\] step=(\d+) .*samples_per_s=([0-9.]+)")


def ensure_ray() -> Path:
    """bench/.venv-ray with ray[train]; the project venv's site-packages appended by a .pth."""
    py = RAY_VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", f"import ray; assert ray.__version__ == '{RAY_VERSION}'"],
                                        capture_output=True).returncode == 0
    if not ok:
        log(f"installing ray[train]=={RAY_VERSION} into {RAY_VENV} (its own venv; about a minute)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(RAY_VENV)], check=True)
        site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], text=True,
                              capture_output=True, check=True).stdout.strip()
        import site as _site
        # addsitedir (not a bare path line) so that the project venv's own .pth files (the editable
        # installs of trainyard and trainyard_trainer) are processed too.
        Path(site, "zz-trainyard-venv.pth").write_text(
            f"import site; site.addsitedir({_site.getsitepackages()[0]!r})\n")
        subprocess.run([str(RAY_VENV / "bin" / "pip"), "install", "--quiet", f"ray[train]=={RAY_VERSION}"],
                       check=True)
    return py


def job(workers: int, args: list[str]) -> DistributedTrainingJob:
    return DistributedTrainingJob.from_dict({
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": "p4", "namespace": "local", "uid": f"bench-p4-{time.time_ns()}"},
        "spec": {
            "workers": workers,
            "failurePolicy": {"restartPolicy": "OnFailure", "backoffLimit": 3},
            "template": {"spec": {"containers": [{
                "name": "trainer", "image": "trainyard/trainer:bench",
                "command": ["trainyard-launch", "-m", "trainyard_trainer.examples.train_digits"],
                "args": args}]}},
        },
    })


def trainyard_recovery() -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p4-"))
    try:
        runner = Runner(job(2, REC_ARGS), tmp / "work", tmp / "ckpt",
                        Injection(worker=1, at_step=KILL_AT, sig=signal.SIGKILL), tick=0.01)
        deadline = time.monotonic() + 300
        while runner.step():
            if runner.result.resumed_seconds is not None or time.monotonic() > deadline:
                break
            time.sleep(runner.tick)
        runner.backend.shutdown()
        r = runner.result
        if r.resumed_seconds is None:
            raise RuntimeError(f"no resumed step (phase {runner.job.status.phase}, events {r.events[-3:]})")
        return {"resumed_s": r.resumed_seconds, "resumed_from": float(r.resumed_from or 0)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _last_step(path: Path) -> int:
    try:
        steps = re.findall(r"\[trainyard\] step=(\d+)", path.read_text(errors="replace"))
    except OSError:
        return 0
    return int(steps[-1]) if steps else 0


def ray_recovery(py: Path, kill_at: int = KILL_AT, args: list[str] | None = None,
                 timeout: float = 300) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p4-ray-"))
    out, ckpt = tmp / "out", tmp / "ckpt"
    out.mkdir()
    ckpt.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    with open(tmp / "driver.log", "w") as dlog:
        proc = subprocess.Popen([str(py), "-m", "bench.ray_driver", str(out), str(ckpt), "2", "3", "--",
                                 *(REC_ARGS if args is None else args)],
                                stdout=dlog, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout

        def rank0_logs() -> list[Path]:
            return sorted(out.glob("rank0-pid*.log"))

        killed_at = None
        first_logs: set[Path] = set()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ray driver exited {proc.returncode}:\n{(tmp / 'driver.log').read_text()[-3000:]}")
            logs = rank0_logs()
            if killed_at is None:
                if logs and _last_step(logs[-1]) >= kill_at and (out / "pid-rank1").exists():
                    pid = int((out / "pid-rank1").read_text())
                    first_logs = set(logs)
                    os.kill(pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                    deadline = killed_at + min(timeout, 120)  # from here on, no resumed step is a hang
            else:
                new = [p for p in logs if p not in first_logs]
                if new and _last_step(new[-1]) > 0:
                    resumed = time.monotonic() - killed_at
                    text = new[-1].read_text(errors="replace")
                    m = re.search(r"resumed from step=(\d+)", text)
                    return {"resumed_s": resumed, "resumed_from": float(m.group(1)) if m else 0.0}
            time.sleep(0.01)
        if killed_at is not None:
            return {"hung": 1.0}
        raise TimeoutError(f"ray: no resumed step within {timeout}s:\n{(tmp / 'driver.log').read_text()[-3000:]}")
    finally:
        with_suppress_kill(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def with_suppress_kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _rate(lines: list[str]) -> float:
    rates = [float(m.group(2)) for m in map(STEP.search, lines) if m]
    rates = rates[1:] or rates
    if not rates:
        raise RuntimeError("no step lines")
    return sorted(rates)[len(rates) // 2]


def trainyard_throughput() -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p4-tp-"))
    lines: list[str] = []
    try:
        runner = Runner(job(2, TPUT_ARGS), tmp / "work", tmp / "ckpt", tick=0.05,
                        on_line=lambda w, line: lines.append(line))
        t0 = time.monotonic()
        result = runner.run()
        if result.job.status.phase is None or result.job.status.phase.value != "Succeeded":
            raise RuntimeError(f"job ended {result.job.status.phase}")
        return {"samples_per_s": _rate(lines), "wall_s": time.monotonic() - t0}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def torchrun_throughput() -> dict[str, float]:
    t0 = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "trainyard_trainer.examples.train_digits", *TPUT_ARGS],
                       text=True, capture_output=True, env=env, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"torchrun exited {r.returncode}: {r.stderr[-2000:]}")
    return {"samples_per_s": _rate(r.stdout.splitlines()), "wall_s": time.monotonic() - t0}


def run(rounds: int = 3) -> Result:
    res = Result("p4_ray", "P4 workstation: kill -> resumed vs Ray Train; throughput vs torchrun",
                 workload="train_digits, 2 workers x 1 proc, gloo/CPU; recovery: kill worker 1 at step >= 150 "
                          f"(checkpoint every 50, 20 ms step delay); throughput: 40 epochs; {rounds} interleaved "
                          "rounds after 1 warm-up round",
                 method=__doc__ or "")
    py = ensure_ray()
    contenders: dict[str, Any] = {
        "trainyard-recovery": lambda r: trainyard_recovery(),
        "ray-recovery": lambda r: ray_recovery(py),
        "trainyard-throughput": lambda r: trainyard_throughput(),
        "torchrun-throughput": lambda r: torchrun_throughput(),
    }
    log(f"P4: {', '.join(contenders)} x {rounds} rounds")
    trials = interleave(contenders, rounds)
    res.trials = trials
    ty, ray = column(trials["trainyard-recovery"], "resumed_s"), column(trials["ray-recovery"], "resumed_s")
    res.row("kill -> training resumed: ray / trainyard", paired_ratios(ray, ty), "(no target)", a=stats(ray), b=stats(ty))
    a = column(trials["trainyard-throughput"], "samples_per_s")
    b = column(trials["torchrun-throughput"], "samples_per_s")
    res.row("steady-state samples/s: trainyard run / torchrun", paired_ratios(a, b), "(~1.0x)", a=stats(a), b=stats(b),
            unit=" samples/s")
    res.extra["absolute"] = {n: {k: stats(column(t, k)) for k in ("resumed_s", "resumed_from", "samples_per_s",
                                                                  "wall_s")} for n, t in trials.items()}
    res.extra["ray_version"] = RAY_VERSION
    return res
