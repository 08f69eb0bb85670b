"""Async checkpointing: how long training stalls for a checkpoint of a >= 100 MB model, sync vs async.

Workload: `python -m trainyard_trainer.examples.train_synthetic --hidden 2048 --layers 6` (25.2 M
parameters: 100.8 MB of fp32 weights; with SGD momentum a ~200 MB checkpoint), one process (no
torchrun), batch 16, 40 steps, a checkpoint every 10 steps (4 saves) into a fresh directory on the
local disk, keep 2. The Checkpointer writes a temp file, fsyncs, renames, writes the manifest.

Contenders, interleaved: sync (`Checkpointer.save`), async (`save(asynchronous=True)`: the call
returns after copying the state to CPU memory; the write happens in a background thread, one in
flight at most), and none (no checkpoint; the baseline for the end-to-end figure).

Figures:
- stall: the seconds `save()` blocked the training loop, as the example prints it
  (`[trainyard] checkpoint step=N stall_s=...`), median over a run's 4 saves;
- end-to-end: the training loop's wall time (harness clock, from the `starting from step=0` line
  to the `done` line, which comes after `close()` waited for the last background write), minus the
  same for the no-checkpoint run of the same round: what checkpointing cost the run in total,
  including the background thread's competition for the 2 cores and the final wait.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Result, column, interleave, log, paired_ratios, stats

ARGS = ["--hidden", "2048", "--layers", "6", "--batch-size", "16", "--steps", "40", "--log-every", "10"]
STALL = re.compile(r"\[trainyard\] checkpoint step=(\d+) stall_s=([0-9.]+)")
PARAMS = re.compile(r"model params=(\d+) bytes=(\d+)")


def trial(mode: str) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
    argv = [sys.executable, "-m", "trainyard_trainer.examples.train_synthetic", *ARGS]
    if mode != "none":
        argv += ["--checkpoint-dir", str(tmp), "--checkpoint-every", "10", "--keep", "2"]
    if mode == "async":
        argv.append("--async-checkpoint")
    env = {"OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    import os
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})
    start = done = None
    stalls: list[float] = []
    size = 0
    out: list[str] = []
    assert proc.stdout
    for line in proc.stdout:
        now = time.monotonic()
        out.append(line)
        if "starting from step=" in line and start is None:
            start = now
        if "[trainyard] done" in line:
            done = now
        m = STALL.search(line)
        if m:
            stalls.append(float(m.group(2)))
        m = PARAMS.search(line)
        if m:
            size = int(m.group(2))
    rc = proc.wait()
    ckpt_bytes = max((f.stat().st_size for f in tmp.glob("step-*.pt")), default=0)
    shutil.rmtree(tmp, ignore_errors=True)
    if rc != 0 or start is None or done is None:
        raise RuntimeError(f"train_synthetic {mode} exited {rc}:\n{''.join(out)[-2000:]}")
    res = {"loop_s": done - start, "weights_mb": size / 1e6}
    if stalls:
        res["stall_s"] = sorted(stalls)[len(stalls) // 2]
        res["max_stall_s"] = max(stalls)
        res["saves"] = float(len(stalls))
        res["checkpoint_mb"] = ckpt_bytes / 1e6
    return res


def run(rounds: int = 3) -> Result:
    res = Result("ckpt_async", "Async checkpointing: training stall per save, sync vs async (100.8 MB model)",
                 workload="train_synthetic --hidden 2048 --layers 6 (25.2M params), 40 steps, save every 10; "
                          f"{rounds} interleaved rounds after 1 warm-up round",
                 method=__doc__ or "")
    contenders: dict[str, Any] = {"sync": lambda r: trial("sync"), "async": lambda r: trial("async"),
                                  "none": lambda r: trial("none")}
    log(f"checkpoint stall: {', '.join(contenders)} x {rounds} rounds")
    trials = interleave(contenders, rounds)
    res.trials = trials
    sync, asy, none = trials["sync"], trials["async"], trials["none"]
    res.row("stall per save: sync / async", paired_ratios(column(sync, "stall_s"), column(asy, "stall_s")),
            "(async should be far lower)", a=stats(column(sync, "stall_s")), b=stats(column(asy, "stall_s")))
    cost = {n: [t["loop_s"] - b["loop_s"] if "error" not in t and "error" not in b else None
                for t, b in zip(trials[n], none, strict=False)] for n in ("sync", "async")}
    res.row("end-to-end cost of 4 saves: sync / async", paired_ratios(cost["sync"], cost["async"]), "(no target)",
            a=stats(cost["sync"]), b=stats(cost["async"]))
    res.extra["absolute"] = {n: {k: stats(column(t, k)) for k in ("stall_s", "max_stall_s", "loop_s",
                                                                  "checkpoint_mb", "weights_mb")}
                             for n, t in trials.items()}
    res.extra["checkpoint_cost_s"] = {n: stats(v) for n, v in cost.items()}
    return res
