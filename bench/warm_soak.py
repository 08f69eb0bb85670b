"""Kill-and-resume on the workstation runtime, shared by tests/runtime/test_warm.py (the hang test)
and bench/p6_warm.py (the figures).

`soak()` runs one job of train_digits (2 workers, gloo, CPU) under `trainyard.local.runner.Runner` and
kills the training process of a worker `kills` times, each time once the gang is training (and,
for restartMode Warm with `wait_warm`, once a spare is ready for every rank, so that the restart
is warm), at a step past `kill_at` (the first kill) or `every` steps past the last resume. The
victim is the rank's own process (for a cold worker the python under trainyard-launch and
torchrun; for a warm one the spare itself), SIGKILLed as a crash would.

Each recovery records, measured from the kill (time.monotonic() in this process; the workers'
phase lines, TRAINYARD_WARM_TRACE=1, are wall-clock time.time() and are converted):
- `detected_s`: the engine's decision (the restart's WorkerFailed event, emitted once the new gang
  was started);
- `first_step_s`: the first step line of the new attempt (the figure);
- `resumed_from`, `last_checkpoint`: the step the new gang resumed from and the newest checkpoint
  whose manifest was complete at the kill (checkpoint safety: resumed_from >= last_checkpoint);
- warm phases (`assigned_s`, `process_group_ready_s`, `ddp_start_s`, `ddp_ready_s`);
- `hung`: no first step within `timeout` (then the soak stops: a hang is a hang).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from trainyard.api import DistributedTrainingJob
from trainyard.engine.plan import Event
from trainyard.local.backend import LocalWorker
from trainyard.local.runner import Runner

ARGS = ["--epochs", "400", "--log-every", "1", "--checkpoint-every", "50", "--step-delay", "0.02"]
STEP_RE = re.compile(r"\[trainyard\] step=(\d+)")
RESUMED_RE = re.compile(r"\[trainyard\] resumed from step=(\d+)")
PHASE_RE = re.compile(r"\[trainyard-warm\] phase=(\w+) t=([0-9.]+)")


def job(mode: str, workers: int = 2, args: list[str] | None = None, backoff_limit: int = 3,
        name: str = "soak", in_place: int = 0) -> DistributedTrainingJob:
    return DistributedTrainingJob.from_dict({
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": name, "namespace": "local", "uid": f"{name}-{time.time_ns()}"},
        "spec": {
            "workers": workers,
            "failurePolicy": {"restartPolicy": "OnFailure", "backoffLimit": backoff_limit, "backoffSeconds": 0,
                              "restartMode": mode, "inPlaceRestarts": in_place},
            "template": {"spec": {"containers": [{
                "name": "trainer", "image": "trainyard/trainer:bench",
                "command": ["trainyard-launch", "-m", "trainyard_trainer.examples.train_digits"],
                "args": list(args or ARGS)}]}},
        },
    })


def last_completed_checkpoint(directory: Path) -> int:
    """The newest step whose data file and manifest both exist (a completed save)."""
    steps = [int(m.group(1)) for p in directory.glob("step-*.pt.json")
             if (m := re.match(r"step-(\d+)\.pt\.json$", p.name)) and p.with_suffix("").exists()]
    return max(steps, default=-1)


def training_process(w: LocalWorker) -> psutil.Process:
    """The rank's own process: from the worker's root, the oldest child at every level down to a
    process without children. A cold worker: trainyard-launch -> torchrun -> the rank. A warm gang's
    worker: the spare itself (the root). Warm in-place restarts: trainyard-launch -> [the rank's
    spare, the next spare, started after it]."""
    p = psutil.Process(w.proc.pid)
    while kids := p.children():
        p = min(kids, key=lambda k: k.create_time())
    return p


@dataclass
class Recovery:
    victim: int
    attempt: int
    killed_at_step: int
    last_checkpoint: int
    warm_spares_ready: int
    spare_memory: list[dict[str, int]]
    detected_s: float | None = None
    first_step_s: float | None = None
    resumed_from: int | None = None
    hung: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    started_warm: bool = False

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"victim": float(self.victim), "killed_at_step": float(self.killed_at_step),
                               "last_checkpoint": float(self.last_checkpoint), "hung": float(self.hung),
                               "warm": float(self.started_warm)}
        for k in ("detected_s", "first_step_s"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.resumed_from is not None:
            out["resumed_from"] = float(self.resumed_from)
        out.update({f"{k}_s": v for k, v in self.phases.items()})
        if self.spare_memory:
            out["spare_pss_mb"] = sum(m["pss"] for m in self.spare_memory) / len(self.spare_memory) / 1e6
            out["spare_uss_mb"] = sum(m["uss"] for m in self.spare_memory) / len(self.spare_memory) / 1e6
            out["spare_rss_mb"] = sum(m["rss"] for m in self.spare_memory) / len(self.spare_memory) / 1e6
        return out


@dataclass
class Soak:
    recoveries: list[Recovery]
    phase: str
    restarts: int
    final: str | None
    events: list[Event]


def soak(kills: int, mode: str = "Warm", *, kill_at: int = 300, every: int = 60, victims: tuple[int, ...] = (1,),
         timeout: float = 120.0, wait_warm: bool = True, args: list[str] | None = None,
         workdir: Path | None = None, finish: bool = True, total_timeout: float = 3600, in_place: int = 0) -> Soak:
    """`in_place` > 0: restartMode Warm with inPlaceRestarts, so trainyard-launch restarts the ranks in
    place (trainyard_trainer.inplace): no new attempt; a recovery is the "resumed from" line and the
    first step after the kill, detection the launcher's "in-place restart" line."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix="warm-soak-"))
    (tmp / "ckpt").mkdir(parents=True, exist_ok=True)
    events: list[tuple[float, Event]] = []
    lines: list[tuple[float, int, int, str]] = []
    os.environ["TRAINYARD_WARM_TRACE"] = "1"  # the spares' phase lines (the pool passes it on)
    runner = Runner(job(mode, args=args, backoff_limit=kills + 3, in_place=in_place), tmp / "work", tmp / "ckpt",
                    tick=0.01,
                    on_event=lambda e: events.append((time.monotonic(), e)),
                    on_line=lambda w, line: lines.append((time.monotonic(), w.launch.attempt, w.launch.index, line)))
    b = runner.backend
    recoveries: list[Recovery] = []
    current: Recovery | None = None
    kill_mono = kill_wall = 0.0
    next_kill = kill_at
    deadline = time.monotonic() + total_timeout
    seen = 0
    spares_warm = 0  # in_place: the launchers' "spare ... is warm" lines since the last kill
    try:
        while runner.step():
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"soak: not done within {total_timeout}s")
            new, seen = lines[seen:], len(lines)
            spares_warm += sum("in-place restart" in line and "is warm" in line for _, _, _, line in new)
            if current is not None:
                for t, attempt, _index, line in new:
                    if attempt < current.attempt or (attempt == current.attempt and not in_place):
                        continue
                    if in_place and current.detected_s is None and "] in-place restart " in line:
                        current.detected_s = t - kill_mono
                        current.started_warm = True
                    if (m := PHASE_RE.search(line)) and m.group(1) not in current.phases:
                        current.phases[m.group(1)] = float(m.group(2)) - kill_wall
                    if current.resumed_from is None and (m := RESUMED_RE.search(line)):
                        current.resumed_from = int(m.group(1))
                    if current.first_step_s is None and current.resumed_from is not None and STEP_RE.search(line):
                        current.first_step_s = t - kill_mono
                if current.detected_s is None:
                    for t, ev in events:
                        if t >= kill_mono and ev.reason in ("WorkerFailed", "RendezvousFailed"):
                            current.detected_s = t - kill_mono
                            break
                if not current.started_warm:
                    current.started_warm = any(t >= kill_mono and ev.reason == "WarmStart" for t, ev in events)
                if current.first_step_s is not None:
                    resume = current.resumed_from if current.resumed_from is not None else current.killed_at_step
                    next_kill = resume + every
                    current = None
                elif now - kill_mono > timeout:
                    current.hung = True
                    break
            if current is None and len(recoveries) < kills:
                live = [w for w in b.workers.values() if w.proc.poll() is None]
                steps = [w.step for w in live if w.step is not None and w.launch.attempt == runner.job.status.attempt]
                ready = spares_warm if in_place else b.pool.ready()
                warm_ok = mode != "Warm" or not wait_warm or ready >= runner.job.spec.desired_workers
                if steps and max(steps) >= next_kill and warm_ok:
                    victim = victims[len(recoveries) % len(victims)]
                    w = next(w for w in live if w.launch.index == victim)
                    proc = training_process(w)
                    mem = b.pool.memory()
                    last = last_completed_checkpoint(tmp / "ckpt")
                    proc.send_signal(signal.SIGKILL)
                    kill_mono, kill_wall = time.monotonic(), time.time()
                    current = Recovery(victim, w.launch.attempt, max(steps), last, ready, mem)
                    recoveries.append(current)
                    spares_warm = 0
            elif not finish and current is None and len(recoveries) >= kills:
                break
            time.sleep(runner.tick)
    finally:
        runner.backend.shutdown()
        os.environ.pop("TRAINYARD_WARM_TRACE", None)
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    st = runner.job.status
    return Soak(recoveries, st.phase.value if st.phase else "?", st.restarts, runner.result.final,
                [e for _, e in events])
