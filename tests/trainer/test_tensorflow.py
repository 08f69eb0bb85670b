"""The TensorFlow runtime, trained for real: MultiWorkerMirroredStrategy workers as local processes.

Each worker is ``trainyard-launch`` with ``TRAINYARD_RUNTIME=tensorflow`` and a ``TF_CONFIG`` on
127.0.0.1 with a free port per worker, as the local runtime would start them; a gang restart gets
new ports (in a cluster: new per-attempt hostnames). Nothing here imports torch.

Needs tensorflow (``pip install tensorflow-cpu==2.21.0``) and scikit-learn in the interpreter that
runs the workers: this one, or ``$TRAINYARD_TF_PYTHON``. Without it the module is skipped with
one line saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainyard_trainer.launch import descendants
from trainyard_trainer.progress import CHECKPOINT_RE, DONE_RE, RESUMED_RE, STARTING_RE, STEP_RE

from tests.support import tier_unavailable

from .helpers import EXAMPLES, Worker, base_env, free_port, kill_gang, pid_alive, wait_for_line

TF_PYTHON = os.environ.get("TRAINYARD_TF_PYTHON") or sys.executable
TF_DIGITS = EXAMPLES / "train_tf_digits.py"
TIMEOUT = 240  # generous: importing tensorflow alone takes 6-10 s on a busy 2-core machine


def _tf_missing() -> str | None:
    probe = "import importlib.util as u, sys; sys.exit(0 if u.find_spec('tensorflow') and u.find_spec('sklearn') else 3)"
    try:
        rc = subprocess.run([TF_PYTHON, "-c", probe], capture_output=True, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{TF_PYTHON}: {exc}"
    return None if rc == 0 else f"{TF_PYTHON} has no tensorflow or scikit-learn"


_missing = _tf_missing()


@pytest.fixture(autouse=True)
def _tensorflow_present():
    """make test installs tensorflow-cpu (trainer-image[tensorflow]): in CI its absence fails each test."""
    if _missing:
        tier_unavailable("tensorflow", f"{_missing} (pip install tensorflow-cpu==2.21.0 scikit-learn, "
                         "or set TRAINYARD_TF_PYTHON)")

pytestmark = pytest.mark.tensorflow


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        if (p := free_port()) not in ports:
            ports.append(p)
    return ports


def start_tf_gang(tmp: Path, args: list[str], *, workers: int = 2, tag: str, attempt: int) -> list[Worker]:
    """One launcher per worker with a fresh TF_CONFIG: new ports for every attempt."""
    ports = free_ports(workers)
    gang = []
    for i in range(workers):
        log = tmp / f"{tag}-w{i}.log"
        env = base_env(
            TRAINYARD_RUNTIME="tensorflow", TF_CONFIG=tf_config(ports, i), TRAINYARD_JOB_NAME="tf",
            TRAINYARD_WORKER_INDEX=str(i), TRAINYARD_ATTEMPT=str(attempt),
            TRAINYARD_HEARTBEAT_FILE=str(tmp / f"{tag}-w{i}.heartbeat"), TRAINYARD_PROGRESS_DEADLINE_SECONDS="180",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        with open(log, "wb") as f:
            p = subprocess.Popen([TF_PYTHON, "-m", "trainyard_trainer.launch", str(TF_DIGITS), *args], env=env,
                                 stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        gang.append(Worker(i, p, log, time.monotonic()))
    return gang


def kill9(w: Worker) -> None:
    """SIGKILL the worker's whole tree at once, as a node failure (or the local runtime's kill) does."""
    for pid in [*descendants(w.proc.pid), w.proc.pid]:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_all(gang: list[Worker], timeout: float) -> list[int | None]:
    deadline = time.monotonic() + timeout
    for w in gang:
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    return [w.proc.poll() for w in gang]


def _lines(w: Worker, rx: re.Pattern) -> list[re.Match]:
    return [m for line in w.lines() if (m := rx.match(line))]


def newest_checkpoint(d: Path) -> int | None:
    """The step of the newest checkpoint, read from CheckpointManager's ``checkpoint`` state file."""
    state = d / "checkpoint"
    if not state.exists():
        return None
    m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"$', state.read_text(), re.M)
    return int(m.group(1)) if m else None


def test_tf_two_workers_agree_survive_kill9_and_resume_after_gang_restart(tmp_path):
    ckpt, weights = tmp_path / "ckpt", tmp_path / "weights"
    common = ["--checkpoint-dir", str(ckpt), "--checkpoint-every", "10", "--log-every", "1"]

    # 1. attempt 0: two workers from scratch, slowed down so the kill lands mid-training
    gang = start_tf_gang(tmp_path, [*common, "--max-steps", "400", "--step-delay", "0.05"], tag="a0", attempt=0)
    try:
        wait_for_line(gang[0], r"^\[trainyard\] step=1 ", timeout=TIMEOUT)
        print(f"\nTF 2 workers: first step {time.monotonic() - gang[0].started:.1f} s after the launchers started")
        wait_for_line(gang[0], r"^\[trainyard\] checkpoint step=30 ", timeout=TIMEOUT)
        assert [m["step"] for m in _lines(gang[0], STARTING_RE)] == ["0"]
        assert not [line for line in gang[1].lines() if line.startswith("[trainyard] ")]  # only task 0 prints
        beat_before = time.time()
        time.sleep(1.2)  # beats are rate-limited to one a second per process
        victim, survivor = gang[1], gang[0]
        t_kill = time.monotonic()
        kill9(victim)
        survivor.proc.wait(timeout=120)  # MWMS: the peer's collective fails (UNAVAILABLE) and it exits
        t_survivor = time.monotonic() - t_kill
    finally:
        codes = wait_all(gang, 5)
        kill_gang(gang)  # the gang restart: whatever is left of the old attempt goes
    print(f"kill -9 of worker 1: the survivor exited {codes[0]} after {t_survivor:.1f} s")
    assert codes[1] == -signal.SIGKILL
    assert codes[0] not in (0, None), survivor.text()  # it fails too: only a gang restart recovers MWMS
    assert re.search(r"UNAVAILABLE|Connection reset|socket closed|Aborted", survivor.text()), survivor.text()
    saved = [int(m["step"]) for m in _lines(survivor, CHECKPOINT_RE)]
    assert saved[:3] == [10, 20, 30] and all(s % 10 == 0 for s in saved)
    assert all(m["async"] == "false" for m in _lines(survivor, CHECKPOINT_RE))
    resumed_from = newest_checkpoint(ckpt)
    assert resumed_from is not None and resumed_from >= 30 and resumed_from % 10 == 0
    hb = tmp_path / "a0-w0.heartbeat"
    assert hb.stat().st_mtime > beat_before, "the example does not beat the heartbeat"

    # 2. attempt 1: BOTH workers again, a new TF_CONFIG (new ports), the same checkpoint directory
    target = resumed_from + 15
    gang = start_tf_gang(tmp_path, [*common, "--max-steps", str(target), "--weights-out", str(weights)],
                         tag="a1", attempt=1)
    try:
        wait_for_line(gang[0], r"^\[trainyard\] resumed from step=", timeout=TIMEOUT)
        wait_for_line(gang[0], rf"^\[trainyard\] step={resumed_from + 1} ", timeout=TIMEOUT)
        print(f"gang restart: first resumed step (step {resumed_from + 1}) {time.monotonic() - t_kill:.1f} s after "
              f"the kill, {time.monotonic() - gang[0].started:.1f} s after the new launchers started")
        codes = wait_all(gang, TIMEOUT)
    finally:
        kill_gang(gang)
    assert codes == [0, 0], "\n".join(w.text() for w in gang)
    lead = gang[0]
    assert [int(m["step"]) for m in _lines(lead, RESUMED_RE)] == [resumed_from]
    assert not _lines(lead, STARTING_RE)
    assert [int(m["step"]) for m in _lines(lead, STEP_RE)] == list(range(resumed_from + 1, target + 1))
    done = _lines(lead, DONE_RE)
    assert len(done) == 1 and int(done[0]["step"]) == target and 0.5 <= float(done[0]["accuracy"]) <= 1.0
    docs = [json.loads(p.read_text()) for p in sorted(weights.glob("rank-*.json"))]
    assert [d["rank"] for d in docs] == [0, 1] and all(d["step"] == target and d["world_size"] == 2 for d in docs)
    assert docs[0]["sha256"] == docs[1]["sha256"], "MWMS replicas diverged"
    print(f"resumed from step={resumed_from}; final weights sha256 {docs[0]['sha256'][:16]}... on both tasks")
    assert newest_checkpoint(ckpt) == target  # the final state is checkpointed too
    assert not list(ckpt.glob("workertemp_*")), "a non-chief worker left its scratch checkpoint behind"


def test_tf_resume_is_exact(tmp_path):
    """One worker: 25 steps, stop, resume to 60 == 60 steps straight, bit for bit."""
    def run(ck: Path, out: Path, steps: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [TF_PYTHON, str(TF_DIGITS), "--log-every", "1000", "--checkpoint-dir", str(ck), "--checkpoint-every", "25",
             "--max-steps", str(steps), "--weights-out", str(out)],
            env=base_env(TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True, timeout=TIMEOUT)

    straight = run(tmp_path / "a", tmp_path / "wa", 60)
    assert straight.returncode == 0, straight.stderr
    assert newest_checkpoint(tmp_path / "a") == 60
    first = run(tmp_path / "b", tmp_path / "wb", 25)
    assert first.returncode == 0, first.stderr
    resumed = run(tmp_path / "b", tmp_path / "wb", 60)
    assert resumed.returncode == 0, resumed.stderr
    assert "[trainyard] resumed from step=25" in resumed.stdout.splitlines()
    a = json.loads((tmp_path / "wa" / "rank-0.json").read_text())
    b = json.loads((tmp_path / "wb" / "rank-0.json").read_text())
    assert a["step"] == b["step"] == 60
    assert a["sha256"] == b["sha256"], "resuming changed the result"
