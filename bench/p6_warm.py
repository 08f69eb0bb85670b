"""P6 warm recovery on the workstation: kill -> first step after resume for Trainyard's Warm restart
mode against Ray Train, torchrun's in-place restarts and Trainyard's Cold mode; steady-state
throughput with the warm machinery on and off; the memory the spares hold; 20 kill-and-resume runs
for hangs and checkpoint safety.

Same script and data everywhere: trainyard_trainer.examples.train_digits, 2 workers x 1 process,
gloo/CPU, OMP_NUM_THREADS=1, `--epochs 400 --log-every 1 --checkpoint-every 50 --step-delay 0.02`
(a progress line every step; the 20 ms delay leaves the machine some idle time, as a real input
pipeline would, and keeps training going long enough to be killed mid-way). In every contender the
victim is rank 1's own training process, SIGKILLed (a crash), never its launcher or agent.

- trainyard-warm: `trainyard.local.Runner` with `failurePolicy.restartMode: Warm` (bench/warm_soak.py).
  The kill waits until the step is >= 300 *and* a spare is ready for each rank (spares start once the
  job trains and warm up at nice 10, which takes 10-20 s here), so the restart is warm: the figure is
  what a warm restart costs, and the `warm` column says every measured one was.
- trainyard-cold: the same with `restartMode: Cold` (the default): a new trainyard-launch -> torchrun
  -> python tree per worker. Kill at step >= 300.
- trainyard-warm-in-place: `restartMode: Warm, inPlaceRestarts: 3`: no gang restart at all; each
  worker's trainyard-launch restarts its rank in place from a warm spare of its own, coordinated by
  worker 0's launcher (the path a pod takes on Kubernetes). The kill waits until both launchers said
  their next spare is warm.
- torchrun: `torchrun --nnodes 1 --nproc-per-node 2 --max-restarts 3 -m train_digits ...`, its own
  in-place restarts (the agent stays, it restarts both workers as new processes). Kill at step >= 300
  of the process whose RANK is 1; figure: the first step line after the kill that follows a
  "resumed from" line.
- ray: Ray Train 2.60 TorchTrainer with FailureConfig(max_failures=3) (bench/ray_driver.py, as P4).
  Kill at step >= 300.
Figure: kill -> the first step line of the new gang, read the way each contender's logs are read
(files polled every 10 ms). No resumed step within 120 s of the kill counts as a hang.

Phases of a warm restart (cumulative seconds from the kill; the spares print wall-clock phase lines
with TRAINYARD_WARM_TRACE=1): detected (the engine's restart decision; the new gang is handed to the
spares in the same step), assigned (the spare read its rank), process_group_ready (env:// rendezvous
done), ddp_start (the script loaded its data, built its model and loaded + broadcast the
checkpoint), ddp_ready, first_step.

Throughput: samples/s of the same job without step delay, 300 epochs, no checkpoints, `--log-every 50`,
Warm vs Cold (nothing fails: the only difference is the 2 spares warming up and then waiting). The
median of the progress lines after the first, for the whole run (warm-up of the spares included).

Memory held by the spares: rss, pss and uss of each ready spare at the moment of the kill (psutil).

Soak: one Warm job, 20 kills in a row (rank 1, then 0, alternately), each once the gang trains with a
spare per rank and 60 steps past the last resume; every recovery must produce a step within 120 s
(else: a hang) and resume from the newest completed checkpoint at the kill or later.
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

import psutil

from . import p4_ray
from .common import REPO, Result, column, interleave, log, paired_ratios, stats
from .warm_soak import ARGS, last_completed_checkpoint, soak

KILL_AT = 300
HANG_S = 120.0
TPUT_ARGS = ["--epochs", "80", "--log-every", "20", "--checkpoint-every", "0"]
RATE_RE = re.compile(r"\[trainyard\] step=(\d+) .*samples_per_s=([0-9.]+)")
PHASES = ("detected", "assigned", "process_group_ready", "ddp_start", "ddp_ready", "first_step")


def trainyard(mode: str, in_place: int = 0) -> dict[str, float]:
    s = soak(1, mode, kill_at=KILL_AT, timeout=HANG_S, finish=False, in_place=in_place)
    r = s.recoveries[0]
    out = r.row()
    if r.hung:
        return out
    if r.resumed_from is not None and r.resumed_from < r.last_checkpoint:
        out["lost_checkpoint"] = 1.0
    return out


def torchrun_in_place() -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-p6-torchrun-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TRAINYARD_CHECKPOINT_DIR": str(tmp / "ckpt"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "trainer-image"), os.environ.get("PYTHONPATH", "")])}
    (tmp / "ckpt").mkdir()
    out = tmp / "out.log"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                                 "--max-restarts", "3", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
                                 "-m", "trainyard_trainer.examples.train_digits", *ARGS],
                                stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        killed = None
        last_ckpt = -1
        offset = 0
        seen_resume = False
        buf = b""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = out.read_text(errors="replace")
                errors = [ln for ln in text.splitlines() if "Error" in ln or "error" in ln][:8]
                raise RuntimeError(f"torchrun exited {proc.returncode} (killed: {killed is not None}): "
                                   + " | ".join(errors)[:3000])
            with open(out, "rb") as f:
                f.seek(offset)
                data = f.read()
            offset += len(data)
            buf += data
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                m = re.search(r"\[trainyard\] step=(\d+)", line)
                if killed is None and m and int(m.group(1)) >= KILL_AT:
                    rank1 = [p for p in psutil.Process(proc.pid).children(recursive=True)
                             if p.environ().get("RANK") == "1"]
                    if rank1:
                        last_ckpt = last_completed_checkpoint(tmp / "ckpt")
                        rank1[0].send_signal(signal.SIGKILL)
                        killed = time.monotonic()
                        deadline = killed + HANG_S
                elif killed is not None:
                    if (r := re.search(r"\[trainyard\] resumed from step=(\d+)", line)):
                        seen_resume = True
                        resumed = int(r.group(1))
                    elif seen_resume and m:
                        res = {"first_step_s": time.monotonic() - killed, "resumed_from": float(resumed),
                               "last_checkpoint": float(last_ckpt), "hung": 0.0}
                        if resumed < last_ckpt:
                            res["lost_checkpoint"] = 1.0
                        return res
            time.sleep(0.01)
        if killed is not None:
            return {"hung": 1.0, "last_checkpoint": float(last_ckpt)}
        raise TimeoutError("torchrun: never reached the kill step")
    finally:
        # torchrun puts each worker in a process group of its own: killing torchrun's group leaves a
        # hung round's workers training on (seen: two orphans per hung round). Kill the whole tree.
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def ray(py: Path) -> dict[str, float]:
    out = p4_ray.ray_recovery(py, KILL_AT, ARGS)
    if "resumed_s" in out:
        out["first_step_s"] = out.pop("resumed_s")
    return out


def throughput(mode: str) -> dict[str, float]:
    from trainyard.local.runner import Runner

    from .warm_soak import job

    tmp = Path(tempfile.mkdtemp(prefix="bench-p6-tp-"))
    rates: list[float] = []
    spares_ready_at: list[float] = []
    try:
        runner = Runner(job(mode, args=TPUT_ARGS), tmp / "work", tmp / "ckpt", tick=0.05,
                        on_line=lambda w, line: (m := RATE_RE.search(line)) and rates.append(float(m.group(2))))
        mem: list[dict[str, int]] = []
        try:
            while runner.step():
                if mode == "Warm" and not spares_ready_at and runner.backend.pool.ready() >= 2:
                    spares_ready_at.append(len(rates))
                    mem = runner.backend.pool.memory()
                time.sleep(runner.tick)
        finally:
            runner.backend.shutdown()
        if runner.job.status.phase is None or runner.job.status.phase.value != "Succeeded":
            raise RuntimeError(f"job ended {runner.job.status.phase}")
        body = rates[1:] or rates
        out = {"samples_per_s": sorted(body)[len(body) // 2]}
        if spares_ready_at:
            after = rates[max(1, spares_ready_at[0]):]
            if after:
                out["samples_per_s_spares_idle"] = sorted(after)[len(after) // 2]
        if mem:
            out["spare_pss_mb"] = sum(m["pss"] for m in mem) / len(mem) / 1e6
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(rounds: int = 3, soak_kills: int = 20) -> Result:
    res = Result("p6_warm", "P6 warm recovery (workstation): kill -> first step; throughput; spare memory; soak",
                 workload=f"train_digits, 2 workers x 1 proc, gloo/CPU, {' '.join(ARGS)}; kill rank 1's training "
                          f"process at step >= {KILL_AT}; {rounds} interleaved rounds after 1 warm-up round; then one "
                          f"Warm job with {soak_kills} kills in a row",
                 method=__doc__ or "")
    py = p4_ray.ensure_ray()
    contenders: dict[str, Any] = {
        "trainyard-warm": lambda r: trainyard("Warm"),
        "trainyard-cold": lambda r: trainyard("Cold"),
        "trainyard-warm-in-place": lambda r: trainyard("Warm", in_place=3),
        "torchrun": lambda r: torchrun_in_place(),
        "ray": lambda r: ray(py),
        "throughput-warm": lambda r: throughput("Warm"),
        "throughput-cold": lambda r: throughput("Cold"),
    }
    log(f"P6: {', '.join(contenders)} x {rounds} rounds")
    trials = interleave(contenders, rounds)
    res.trials = trials
    warm = column(trials["trainyard-warm"], "first_step_s")
    for other, label, target in (("ray", "ray", "<= 0.20x"), ("torchrun", "torchrun --max-restarts (in place)", "<= 0.33x"),
                                 ("trainyard-cold", "trainyard cold", "(no target)")):
        o = column(trials[other], "first_step_s")
        res.row(f"kill -> first step: trainyard warm / {label}", paired_ratios(warm, o), target, a=stats(warm), b=stats(o))
    ip = column(trials["trainyard-warm-in-place"], "first_step_s")
    tr = column(trials["torchrun"], "first_step_s")
    res.row("kill -> first step: trainyard warm in place / torchrun --max-restarts (in place)", paired_ratios(ip, tr),
            "<= 0.33x", a=stats(ip), b=stats(tr))
    a = column(trials["throughput-warm"], "samples_per_s")
    b = column(trials["throughput-cold"], "samples_per_s")
    res.row("steady-state samples/s: warm spares on / off", paired_ratios(a, b), ">= 0.97x", a=stats(a), b=stats(b),
            unit=" samples/s")
    pss = [v for v in column(trials["trainyard-warm"], "spare_pss_mb") if v is not None]
    res.row("memory held per spare, PSS (absolute)", None, "(report)", a=stats(pss), unit="MB")
    res.extra["absolute"] = {n: {k: stats(column(t, k)) for k in sorted({k for x in t for k in x if k != "error"})}
                             for n, t in trials.items()}
    res.extra["warm_phases_cumulative_s"] = {p: stats(column(trials["trainyard-warm"], f"{p}_s")) for p in PHASES}
    recovering = ("trainyard-warm", "trainyard-warm-in-place", "trainyard-cold", "torchrun", "ray")
    res.extra["hangs"] = {n: sum(1 for t in trials[n] if t.get("hung")) for n in recovering}
    res.extra["errors"] = {n: [t["error"] for t in trials[n] if "error" in t] for n in recovering}
    res.extra["lost_checkpoints"] = {n: sum(1 for t in trials[n] if t.get("lost_checkpoint")) for n in recovering}
    if soak_kills:
        log(f"P6 soak: one Warm job, {soak_kills} kills in a row")
        t0 = time.monotonic()
        s = soak(soak_kills, "Warm", kill_at=KILL_AT, every=60, victims=(1, 0), timeout=HANG_S,
                 # long enough for every kill: each waits for both spares to be warm again (~150 steps here)
                 args=["--epochs", str(max(80, 8 * soak_kills)), "--log-every", "1", "--checkpoint-every", "50",
                       "--step-delay", "0.02"])
        rows = [r.row() for r in s.recoveries]
        hangs = sum(r.hung for r in s.recoveries)
        lost = sum(1 for r in s.recoveries if r.resumed_from is not None and r.resumed_from < r.last_checkpoint)
        res.extra["soak"] = {"kills": len(rows), "hangs": hangs, "lost_checkpoints": lost, "phase": s.phase,
                             "restarts": s.restarts, "final": s.final, "warm": sum(r.started_warm for r in s.recoveries),
                             "first_step_s": stats([r["first_step_s"] for r in rows if "first_step_s" in r]),
                             "duration_s": round(time.monotonic() - t0, 1), "recoveries": rows}
        res.row(f"soak: hangs in {len(rows)} kill-and-resume runs (Warm; absolute)", None, "0",
                a={"n": 1, "median": float(hangs)}, unit="")
        res.row(f"soak: kill -> first step over {len(rows)} warm restarts (absolute)", None, "(report)",
                a=stats([r["first_step_s"] for r in rows if "first_step_s" in r]))
        log(f"  soak: {len(rows)} kills, {hangs} hangs, {lost} lost checkpoints, ended {s.phase} ({s.final})")
    return res
