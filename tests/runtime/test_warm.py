"""restartMode Warm on the workstation runtime, with real torch processes (gloo): kill-and-resume in a
row, every restart warm, never a hang, never a lost checkpoint; and the fallback to cold restarts
for a command a spare cannot run.

TRAINYARD_WARM_KILLS sets the number of kills of the hang test (default 3 here, ~2 min; the
benchmark runs 20: bench/p6_warm.py, `make bench BENCH=p6`)."""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from bench.warm_soak import soak
from trainyard.api import Phase
from trainyard.local.runner import Runner, load_job

pytestmark = pytest.mark.torch

KILLS = int(os.environ.get("TRAINYARD_WARM_KILLS", "3"))
# Long enough for KILLS kills, each after the spares warmed up again (10-40 s on this machine).
ARGS = ["--epochs", "150", "--log-every", "1", "--checkpoint-every", "50", "--step-delay", "0.05"]
STEPS = 150 * 23  # 1437 training samples in global batches of 64: 23 steps per epoch


def test_kill_and_resume_in_a_row_is_warm_never_hangs_and_never_loses_a_checkpoint(tmp_path):
    s = soak(KILLS, "Warm", kill_at=120, every=60, victims=(1, 0), timeout=120, args=ARGS, workdir=tmp_path,
             total_timeout=900)
    assert len(s.recoveries) == KILLS, [r.row() for r in s.recoveries]
    for r in s.recoveries:
        assert not r.hung, r.row()
        assert r.started_warm, r.row()  # a spare was ready for every rank, and took it
        assert r.resumed_from is not None and r.resumed_from >= r.last_checkpoint, r.row()
        # killed_at_step is the step last seen before the checkpoint listing and the kill: the
        # trainer may be a step further on, past a checkpoint it completed in between
        assert r.resumed_from <= max(r.killed_at_step, r.last_checkpoint), r.row()
    assert s.phase == "Succeeded" and s.restarts == KILLS, (s.phase, s.restarts, s.events[-3:])
    assert s.final and s.final.startswith(f"done step={STEPS}")  # every step, once
    warm = [e for e in s.events if e.reason == "WarmStart"]
    assert len(warm) == KILLS and all("started in warm spares" in e.message for e in warm)


WORKER = """
import os, sys, time
for i in range(40):
    print(f"[trainyard] step={i + 1} loss=1.0", flush=True)
    time.sleep(0.05)
    if i == 20 and os.environ["TRAINYARD_WORKER_INDEX"] == "1" and os.environ["TRAINYARD_ATTEMPT"] == "0":
        sys.exit(3)
"""


def test_a_command_a_spare_cannot_run_restarts_cold_and_says_why(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    body = {"apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob", "metadata": {"name": "sh"},
            "spec": {"workers": 2, "failurePolicy": {"restartMode": "Warm", "backoffSeconds": 0},
                     "template": {"spec": {"containers": [{"name": "trainer", "image": "local", "command": [
                         "/bin/sh", "-c", f"exec {sys.executable} {tmp_path / 'worker.py'}"]}]}}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(body))
    result = Runner(load_job(tmp_path / "job.yaml"), tmp_path / "work", tmp_path / "ckpt", tick=0.02).run()
    assert result.job.status.phase == Phase.SUCCEEDED and result.job.status.restarts == 1
    reasons = [e.reason for e in result.events]
    unavailable = next(e for e in result.events if e.reason == "WarmUnavailable")
    assert "sh is not trainyard-launch, torchrun or python" in unavailable.message
    cold = [e for e in result.events if e.reason == "ColdStart"]
    assert cold and "sh is not trainyard-launch" in cold[-1].message, reasons
    assert "WarmStart" not in reasons


def test_warm_in_place_restarts_keep_the_workers_and_resume_from_the_checkpoint(tmp_path):
    """restartMode Warm with inPlaceRestarts: trainyard-launch restarts both ranks in place from its
    own warm spares (trainyard_trainer.inplace), the engine sees no failure (attempt 0, no restart),
    and each recovery resumes from the newest completed checkpoint."""
    kills = min(KILLS, 2)
    s = soak(kills, "Warm", kill_at=120, every=60, victims=(1, 0), timeout=120, args=ARGS, workdir=tmp_path,
             total_timeout=900, in_place=kills + 1)
    assert len(s.recoveries) == kills, [r.row() for r in s.recoveries]
    for r in s.recoveries:
        assert not r.hung and r.started_warm, r.row()
        assert r.resumed_from is not None and r.last_checkpoint <= r.resumed_from <= max(r.killed_at_step,
                                                                                        r.last_checkpoint), r.row()
        assert r.attempt == 0, r.row()
    assert s.phase == "Succeeded" and s.restarts == 0, (s.phase, s.restarts)
    assert s.final and s.final.startswith(f"done step={STEPS}")
    assert not [e for e in s.events if e.reason in ("WorkerFailed", "WarmStart")]
