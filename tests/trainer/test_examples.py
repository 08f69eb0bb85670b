"""The example scripts, trained for real: 2 local workers, each its own trainyard-launch process with
the env the operator sets (PET_* with a c10d rendezvous on 127.0.0.1), like two pods would."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from trainyard_trainer.checkpoint import Checkpointer
from trainyard_trainer.contract import PEER_LOST_EXIT_CODE
from trainyard_trainer.progress import CHECKPOINT_RE, DONE_RE, RESUMED_RE, STARTING_RE, STEP_RE

from .helpers import DIGITS, SYNTHETIC, base_env, rank0, start_gang, wait_for_any, wait_gang
from .samples import check_exactly_once

pytestmark = pytest.mark.torch

TIMEOUT = 180  # generous: a finished run takes ~10 s here


def _lines(worker, rx) -> list[re.Match]:
    return [m for line in worker.lines() if (m := rx.match(line))]


def _weights(d) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("rank-*.json"))]


def test_digits_two_workers_killed_then_resumed(tmp_path):
    """Two workers train from scratch; one is killed mid-training (SIGTERM, as a pod deletion would);
    a new gang on the same checkpoint dir resumes at exactly the newest checkpoint and finishes."""
    ckpt, weights_dir, samples = tmp_path / "ckpt", tmp_path / "weights", tmp_path / "samples"
    common = ["--checkpoint-dir", str(ckpt), "--checkpoint-every", "10", "--log-every", "1", "--log-samples", str(samples)]

    # 1. a fixed-size (2:2) gang from scratch, slowed down so that the kill lands mid-training
    gang = start_gang(tmp_path, DIGITS, [*common, "--max-steps", "400", "--step-delay", "0.05"], tag="first")
    wait_for_any(gang, r"^\[trainyard\] step=1 ", timeout=TIMEOUT)
    t_first = time.monotonic() - gang[0].started
    print(f"2 local workers (2:2): first step {t_first:.2f} s after the launchers started "
          "(an elastic gang would wait for torchrun's 30 s last call)")
    lead, _ = wait_for_any(gang, r"^\[trainyard\] checkpoint step=20 ", timeout=TIMEOUT)
    assert [m["step"] for m in _lines(lead, STARTING_RE)] == ["0"]
    victim = next(w for w in gang if w is not lead)
    assert not _lines(victim, STEP_RE)  # only rank 0 prints progress
    t_kill = time.monotonic()
    victim.proc.send_signal(signal.SIGTERM)
    codes = wait_gang(gang, 60)
    print(f"after SIGTERM to one worker: it exited {codes[victim.index]}, its peer {codes[lead.index]}, "
          f"both within {time.monotonic() - t_kill:.2f} s")
    assert codes[victim.index] == 143, victim.text()  # a signal, not a bug in the script
    # its peer vanished: it fails too, and says the gang broke under it rather than blaming the script
    assert codes[lead.index] == PEER_LOST_EXIT_CODE, lead.text()
    saved = [int(m["step"]) for m in _lines(lead, CHECKPOINT_RE)]
    assert saved[:2] == [10, 20] and all(s % 10 == 0 for s in saved)
    last = Checkpointer(ckpt).load_latest()
    assert last is not None and last[1] == saved[-1]
    resumed_from = last[1]

    # 2. a new gang (new rendezvous id), same checkpoint dir: resumes at exactly that step
    target = resumed_from + 15
    gang = start_gang(tmp_path, DIGITS, [*common, "--max-steps", str(target), "--weights-out", str(weights_dir)],
                      tag="second")
    codes = wait_gang(gang, TIMEOUT)
    assert codes == [0, 0], "\n".join(w.text() for w in gang)
    lead = rank0(gang)
    assert [int(m["step"]) for m in _lines(lead, RESUMED_RE)] == [resumed_from]
    # the data position: 1437 training samples, global batches of 2 x 32, 23 steps per epoch
    (m,) = _lines(lead, RESUMED_RE)
    assert (int(m["epoch"]), int(m["sample"]), int(m["num_samples"])) == (
        resumed_from // 23, resumed_from % 23 * 64, 1437)
    history = check_exactly_once(samples, complete_epochs=target // 23)
    assert len(history.runs) == 2 and sorted(history.steps) == list(range(1, target + 1))
    assert not _lines(lead, STARTING_RE)
    assert [int(m["step"]) for m in _lines(lead, STEP_RE)] == list(range(resumed_from + 1, target + 1))
    done = _lines(lead, DONE_RE)
    assert len(done) == 1 and int(done[0]["step"]) == target and 0.0 <= float(done[0]["accuracy"]) <= 1.0
    weights = _weights(weights_dir)
    assert [w["rank"] for w in weights] == [0, 1]
    assert all(w["world_size"] == 2 and w["step"] == target for w in weights)  # a fixed N:N gang of 2
    assert weights[0]["sha256"] == weights[1]["sha256"], "DDP replicas diverged"
    assert Checkpointer(ckpt).steps()[-1] == target  # the final state is checkpointed too


def test_digits_resume_is_exact(tmp_path):
    """Resumed from a checkpoint == never interrupted, bit for bit (one process, no torchrun)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(DIGITS), "--log-every", "1000", "--checkpoint-dir", str(tmp_path / "ck"),
                               "--checkpoint-every", "25", *args], env=base_env(), capture_output=True, text=True,
                              timeout=TIMEOUT)

    straight = run("--max-steps", "60", "--weights-out", str(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr
    assert Checkpointer(tmp_path / "ck").steps() == [25, 50, 60]
    for step in (50, 60):  # as if the run had died just after step 25's checkpoint
        (tmp_path / "ck" / f"step-{step:08d}.pt").unlink()
        (tmp_path / "ck" / f"step-{step:08d}.pt.json").unlink()
    resumed = run("--max-steps", "60", "--weights-out", str(tmp_path / "b"))
    assert resumed.returncode == 0, resumed.stderr
    assert "[trainyard] resumed from step=25 epoch=0 sample=800/1437" in resumed.stdout.splitlines()
    assert _weights(tmp_path / "a")[0]["sha256"] == _weights(tmp_path / "b")[0]["sha256"]


def test_synthetic_async_checkpoints_report_stalls(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SYNTHETIC), "--hidden", "256", "--layers", "2", "--steps", "12", "--checkpoint-every", "4",
         "--log-every", "4", "--async-checkpoint", "--checkpoint-dir", str(tmp_path)],
        env=base_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    saves = [m for line in proc.stdout.splitlines() if (m := CHECKPOINT_RE.match(line))]
    assert [m["step"] for m in saves] == ["4", "8", "12"] and all(m["async"] == "true" for m in saves)
    assert [m["step"] for line in proc.stdout.splitlines() if (m := DONE_RE.match(line))] == ["12"]
    assert Checkpointer(tmp_path, keep=2).steps() == [8, 12]
