"""The launcher as a real process around a real torchrun (the scripts themselves need no torch)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from trainyard_trainer import HUNG_EXIT_CODE

from ..support import ALL_REDUCE
from .helpers import TRAINER_IMAGE, free_port, launcher_cmd, pid_alive, worker_env

pytestmark = pytest.mark.torch

SLEEPER = textwrap.dedent(
    """
    import os, signal, sys, time
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # forces the SIGKILL escalation
    open(os.path.join(sys.argv[1], f"pid-{os.getpid()}"), "w").close()
    print("sleeper started", flush=True)
    time.sleep(600)
    """
)

BEATER = textwrap.dedent(
    """
    import sys, time
    from trainyard_trainer import heartbeat
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        heartbeat.beat(min_interval=0)
        time.sleep(0.2)
    print("beater done", flush=True)
    """
)

EXITER = "import os, signal, sys\nif sys.argv[1] == 'segv':\n    os.kill(os.getpid(), signal.SIGSEGV)\nsys.exit(int(sys.argv[1]))\n"


def _single(tmp: Path, **extra: str) -> dict[str, str]:
    return worker_env(0, 1, free_port(), f"single-{tmp.name}", **extra)


def _pids(d: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in d.glob("pid-*")]


def _wait_for_pids(d: Path, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pids := _pids(d):
            return pids
        time.sleep(0.05)
    raise AssertionError("the worker never started")


def test_watchdog_kills_a_hung_gang_and_exits_86(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    term_log = tmp_path / "termination-log"
    term_log.write_text("")
    # The deadline counts from the launcher's start (torchrun's start-up and the rendezvous
    # included), so it must exceed a worker's start-up on a busy 2-core machine (over 5 s seen).
    deadline = 15.0
    env = _single(
        tmp_path,
        TRAINYARD_HEARTBEAT_FILE=str(tmp_path / "hb" / "beat"),
        TRAINYARD_PROGRESS_DEADLINE_SECONDS=str(deadline),
        TRAINYARD_TERMINATION_LOG=str(term_log),
        TRAINYARD_KILL_GRACE_SECONDS="1",
    )
    t0 = time.monotonic()
    proc = subprocess.run([*launcher_cmd(), str(script), str(tmp_path), "--ignore-term"], env=env,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    print(f"hung run ended after {elapsed:.1f} s (deadline {deadline} s)")
    assert proc.returncode == HUNG_EXIT_CODE, proc.stderr
    assert "sleeper started" in proc.stdout  # the worker really ran, and never beat
    assert "Hung: no training progress for 15 s" in proc.stderr
    assert term_log.read_text().strip() == "Hung: no training progress for 15 s"
    pids = _pids(tmp_path)
    assert pids and not any(pid_alive(p) for p in pids), "a worker survived the watchdog"


def test_heartbeat_keeps_the_watchdog_quiet(tmp_path):
    script = tmp_path / "beater.py"
    script.write_text(BEATER)
    env = _single(
        tmp_path,
        TRAINYARD_HEARTBEAT_FILE=str(tmp_path / "beat"),
        TRAINYARD_PROGRESS_DEADLINE_SECONDS="15",  # the clock starts with torchrun: above its start-up on a busy machine
    )
    # Runs longer than the deadline: only the beats keep it alive.
    proc = subprocess.run([*launcher_cmd(), str(script), "16"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "beater done" in proc.stdout
    assert "Hung" not in proc.stderr


def test_sigterm_is_forwarded_and_reported_as_a_signal(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    proc = subprocess.Popen([*launcher_cmd(), str(script), str(tmp_path)], env=_single(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = _wait_for_pids(tmp_path)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # torchrun itself exits 1 after a SIGTERM; the launcher says what happened: 128 + 15.
    assert proc.returncode == 143, err
    assert not any(pid_alive(p) for p in pids)


@pytest.mark.parametrize(("arg", "code"), [("3", 3), ("segv", 139)])
def test_worker_exit_code_is_the_launchers(tmp_path, arg, code):
    """torchrun exits 1 for any failed worker; the launcher reports the worker's own code."""
    script = tmp_path / "exiter.py"
    script.write_text(EXITER)
    proc = subprocess.run([*launcher_cmd(), str(script), arg], env=_single(tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == code, proc.stderr
    if code:
        assert "Root Cause" in proc.stderr  # torchrun's summary still reaches the pod log


def test_dns_wait_is_interruptible(tmp_path):
    """An endpoint that never resolves: one line, and SIGTERM stops the wait at once (no torch yet)."""
    env = _single(tmp_path, PET_RDZV_ENDPOINT="no-such-host.invalid:29400", PET_RDZV_CONF="join_timeout=60,is_host=false")
    proc = subprocess.Popen([*launcher_cmd(), "train.py"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stderr.readline()
        assert line.strip() == "[trainyard-launch] waiting for rendezvous host no-such-host.invalid to resolve (up to 60 s)"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143


def test_the_store_host_does_not_wait_for_its_own_name(tmp_path):
    """Worker 0 hosts the rendezvous store (is_host=true). In a pod its own name may not resolve yet
    (seen on the real node: a 30 s cached NXDOMAIN before the gang could start); with TRAINYARD_POD_IP
    it serves the store on that IP at once. Here its endpoint name never resolves at all, worker 1
    reaches the store by IP (as it does from the job's Lease), and the real gang all_reduces."""
    script = tmp_path / "all_reduce.py"
    script.write_text(ALL_REDUCE)
    port, rdzv = free_port(), f"host-{tmp_path.name}"
    envs = [worker_env(0, 2, port, rdzv, PET_RDZV_ENDPOINT=f"no-such-host.invalid:{port}", TRAINYARD_POD_IP="127.0.0.1"),
            worker_env(1, 2, port, rdzv, TRAINYARD_POD_IP="127.0.0.1")]
    procs = [subprocess.Popen([*launcher_cmd(), str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for env in envs]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("all_reduce=3.0" in out for out in outs), outs
    assert "rendezvous host no-such-host.invalid is this worker: serving the store on 127.0.0.1" in outs[0], outs[0]
    assert "waiting for rendezvous host" not in outs[0], outs[0]


def test_launch_module_runs_without_install():
    """`python -m trainyard_trainer.launch --help` works from the source tree alone."""
    proc = subprocess.run([sys.executable, "-m", "trainyard_trainer.launch", "--help"], cwd=TRAINER_IMAGE,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "trainyard-launch SCRIPT" in proc.stdout


def test_killed_launcher_takes_torchrun_and_workers_along(tmp_path):
    """Even a SIGKILLed launcher leaves nothing behind: torchrun gets SIGTERM when it dies (pdeathsig)
    and stops its workers."""
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    proc = subprocess.Popen([*launcher_cmd(), str(script), str(tmp_path)], env=_single(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = _wait_for_pids(tmp_path)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids)


def test_unwritable_heartbeat_fails_at_once(tmp_path):
    env = _single(tmp_path, TRAINYARD_HEARTBEAT_FILE="/proc/trainyard/beat", TRAINYARD_PROGRESS_DEADLINE_SECONDS="60")
    proc = subprocess.run([*launcher_cmd(), "train.py"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "cannot write the heartbeat file /proc/trainyard/beat" in proc.stderr


SLOW_STARTER = textwrap.dedent(
    """
    import sys, time
    from trainyard_trainer import heartbeat
    time.sleep(float(sys.argv[1]))  # no step yet: the first-step budget applies
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        heartbeat.beat(min_interval=0)
        time.sleep(0.2)
    print("slow starter done", flush=True)
    """
)


def test_a_slow_first_step_is_within_the_first_step_budget_not_the_deadline(tmp_path):
    """The steady deadline (15 s: above torchrun's own shutdown after the last beat on a busy machine)
    is shorter than the wait for the first step (20 s): the launcher uses the first-step budget
    (120 s) until the trainer's first beat, then the deadline (kept by beats)."""
    script = tmp_path / "slow.py"
    script.write_text(SLOW_STARTER)
    beat = tmp_path / "beat"
    env = _single(tmp_path, TRAINYARD_HEARTBEAT_FILE=str(beat), TRAINYARD_PROGRESS_DEADLINE_SECONDS="15",
                  TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS="120")
    proc = subprocess.run([*launcher_cmd(), str(script), "20", "2"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "slow starter done" in proc.stdout and "Hung" not in proc.stderr
    assert beat.read_text().strip() == "training"


def test_a_trainer_that_never_steps_is_hung_at_the_first_step_budget(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    term_log = tmp_path / "termination-log"
    term_log.write_text("")
    env = _single(tmp_path, TRAINYARD_HEARTBEAT_FILE=str(tmp_path / "beat"), TRAINYARD_PROGRESS_DEADLINE_SECONDS="600",
                  TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS="10", TRAINYARD_TERMINATION_LOG=str(term_log),
                  TRAINYARD_KILL_GRACE_SECONDS="2")
    proc = subprocess.run([*launcher_cmd(), str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == HUNG_EXIT_CODE, proc.stderr
    assert term_log.read_text().strip() == "Hung: no first training step within 10 s of the trainer's start"


def test_worker_0s_launcher_notes_its_start_in_the_lease(tmp_path):
    """The operator judges a gang's startup once it knows the gang can report: worker 0's launcher
    writes its start (attempt, time) into the job's Lease (here the local runtime's stand-in)."""
    script = tmp_path / "exiter.py"
    script.write_text(EXITER)
    lease = tmp_path / "lease"
    for index in (1, 0):
        env = _single(tmp_path, TRAINYARD_PROGRESS_DIR=str(lease), TRAINYARD_ATTEMPT="4",
                      TRAINYARD_WORKER_INDEX=str(index))
        proc = subprocess.run([*launcher_cmd(), str(script), "0"], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        if index == 1:
            assert not (lease / "launcher.json").exists()  # only worker 0 says so
    doc = json.loads((lease / "launcher.json").read_text())
    assert set(doc) == {"attempt", "time"} and doc["attempt"] == 4


def test_a_warm_in_place_agent_notes_its_start_in_the_lease_too(tmp_path):
    """restartMode Warm with inPlaceRestarts: the launcher is the agent (no torchrun), and it starts
    the gang as well, so worker 0's note is there for the operator's startup budget."""
    script = tmp_path / "exiter.py"
    script.write_text(EXITER)
    lease = tmp_path / "lease"
    port = free_port()
    env = _single(tmp_path, TRAINYARD_PROGRESS_DIR=str(lease), TRAINYARD_ATTEMPT="2", TRAINYARD_RESTART_MODE="Warm",
                  PET_MAX_RESTARTS="1", RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    proc = subprocess.run([*launcher_cmd(), str(script), "0"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "runs in a warm spare" in proc.stderr, proc.stderr
    doc = json.loads((lease / "launcher.json").read_text())
    assert set(doc) == {"attempt", "time"} and doc["attempt"] == 2
