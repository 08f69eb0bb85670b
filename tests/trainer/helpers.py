"""Helpers to run trainyard-launch / torchrun / the example scripts as real local processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..support import free_port

__all__ = ["free_port"]

TRAINER_IMAGE = Path(__file__).resolve().parents[2] / "trainer-image"
EXAMPLES = TRAINER_IMAGE / "trainyard_trainer" / "examples"
DIGITS = EXAMPLES / "train_digits.py"
SYNTHETIC = EXAMPLES / "train_synthetic.py"

_SCRUB = re.compile(r"^(PET_|TRAINYARD_|TORCHELASTIC_|MASTER_ADDR$|MASTER_PORT$|RANK$|WORLD_SIZE$|LOCAL_RANK$|LOCAL_WORLD_SIZE$|GROUP_RANK$)")


def launcher_cmd() -> list[str]:
    """The installed console script if there is one, else the same entry point as a module."""
    script = Path(sys.executable).with_name("trainyard-launch")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "trainyard_trainer.launch"]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _SCRUB.match(k)}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TRAINER_IMAGE), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def worker_env(index: int, nnodes: int, port: int, rdzv_id: str, *, join_timeout: int = 60, **extra: str) -> dict[str, str]:
    """Exactly what the operator (or the local runtime, with 127.0.0.1) sets on a worker."""
    env = base_env(
        PET_NNODES=f"{nnodes}:{nnodes}",
        PET_NPROC_PER_NODE="1",
        PET_RDZV_BACKEND="c10d",
        PET_RDZV_ENDPOINT=f"127.0.0.1:{port}",
        PET_RDZV_ID=rdzv_id,
        PET_RDZV_CONF=f"join_timeout={join_timeout},is_host={'true' if index == 0 else 'false'}",
        PET_MAX_RESTARTS="0",
        TRAINYARD_JOB_NAME="test",
        TRAINYARD_WORKER_INDEX=str(index),
        TRAINYARD_ATTEMPT="0",
    )
    env.update(extra)
    return env


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen
    log: Path
    started: float

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[str]:
        return self.text().splitlines()


def start_gang(
    tmp: Path, script: Path, args: Iterable[str], *, workers: int = 2, tag: str = "run", extra_env: dict | None = None
) -> list[Worker]:
    """One trainyard-launch process per worker, as one pod each would run it."""
    port = free_port()
    rdzv_id = f"{tag}-{uuid.uuid4().hex[:8]}"
    out = []
    for i in range(workers):
        log = tmp / f"{tag}-w{i}.log"
        env = worker_env(i, workers, port, rdzv_id, **(extra_env or {}))
        f = open(log, "wb")  # noqa: SIM115 - closed when the process ends (see wait_gang)
        p = subprocess.Popen([*launcher_cmd(), str(script), *args], env=env, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        f.close()
        out.append(Worker(i, p, log, time.monotonic()))
    return out


def wait_gang(gang: list[Worker], timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for w in gang:
            codes.append(w.proc.wait(timeout=max(0.1, deadline - time.monotonic())))
    finally:
        kill_gang(gang)
    return codes


def kill_gang(gang: list[Worker]) -> None:
    """Stop what is still running: SIGTERM to each launcher (it stops torchrun and the workers), then
    SIGKILL to anything left of its process tree."""
    from trainyard_trainer.launch import descendants

    for w in gang:
        if w.proc.poll() is not None:
            continue
        tree = descendants(w.proc.pid)
        w.proc.send_signal(signal.SIGTERM)
        try:
            w.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(timeout=10)
        for pid in tree:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def wait_for_line(worker: Worker, pattern: str, timeout: float = 60) -> re.Match:
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = rx.search(worker.text())
        if m:
            return m
        if worker.proc.poll() is not None:
            m = rx.search(worker.text())
            if m:
                return m
            raise AssertionError(f"worker {worker.index} exited {worker.proc.returncode} before /{pattern}/:\n{worker.text()}")
        time.sleep(0.05)
    raise AssertionError(f"no /{pattern}/ from worker {worker.index} in {timeout} s:\n{worker.text()}")


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for_any(gang: list[Worker], pattern: str, timeout: float = 60) -> tuple[Worker, re.Match]:
    """The first worker whose output matches: rank 0 is whichever worker the rendezvous made it
    (c10d orders nodes by address and pid, so locally it is not necessarily worker 0)."""
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in gang:
            if m := rx.search(w.text()):
                return w, m
        if all(w.proc.poll() is not None for w in gang):
            break
        time.sleep(0.05)
    logs = "\n".join(f"--- worker {w.index} (exit {w.proc.poll()}):\n{w.text()}" for w in gang)
    raise AssertionError(f"no /{pattern}/ from any worker in {timeout} s:\n{logs}")


def rank0(gang: list[Worker]) -> Worker:
    """The worker that printed progress (only rank 0 does)."""
    printers = [w for w in gang if re.search(r"^\[trainyard\] (starting|resumed) from step=", w.text(), re.M)]
    assert len(printers) == 1, [w.text() for w in gang]
    return printers[0]
