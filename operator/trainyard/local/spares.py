"""Warm spares for spec.failurePolicy.restartMode Warm: processes that have imported torch (and the
script's own imports) and wait for a rank (trainyard_trainer.warm in the trainer library, which
this package never imports: a spare is a child process spoken to over a socketpair).

The pool keeps one spare per worker while the job trains, so that a whole gang can restart warm;
spares are started only once the job is Running (they never slow a gang's own start-up) and warm
up at low priority (their import thread runs at TRAINYARD_WARM_NICE, default 10). A spare that
says `unsupported ...` means the command cannot run in a spare: the pool stops for this job and
says why; restarts are then cold, as without the pool."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ..api import contract

SPARE_MODULE = "trainyard_trainer.warm"
RETIRE_GRACE_SECONDS = 2.0


@dataclass
class Spare:
    proc: subprocess.Popen
    sock: socket.socket
    log: Path
    started: float = field(default_factory=time.monotonic)
    ready_after: float | None = None  # seconds its warm-up took, once it said ready
    unsupported: str | None = None
    _buf: bytes = b""

    def read(self) -> None:
        """Takes in what the spare said (non-blocking)."""
        while self.ready_after is None and self.unsupported is None:
            try:
                chunk = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                if self.proc.poll() is not None and self.unsupported is None and self.ready_after is None:
                    self.unsupported = self._last_log_line() or f"the spare exited with {self.proc.returncode}"
                return
            self._buf += chunk
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith("ready "):
                    parts = text.split()
                    self.ready_after = float(parts[2]) if len(parts) > 2 else time.monotonic() - self.started
                elif text.startswith("unsupported "):
                    self.unsupported = text[len("unsupported "):]

    @property
    def ready(self) -> bool:
        return self.ready_after is not None and self.proc.poll() is None

    def assign(self, env: dict[str, str], cwd: str | None, log: Path) -> bool:
        """Hands it a rank; False if it is gone (the caller starts the worker cold)."""
        msg = json.dumps({"env": env, "cwd": cwd, "log": str(log)}).encode() + b"\n"
        try:
            self.sock.setblocking(True)
            self.sock.sendall(msg)
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                self.sock.close()
        return self.proc.poll() is None

    def retire(self) -> None:
        """EOF on its socket: a waiting spare exits 0 at once."""
        with contextlib.suppress(OSError):
            self.sock.close()

    def _last_log_line(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").strip().splitlines()
            if lines:
                return lines[-1][-300:]
        return ""


def spare_python(command: list[str], path: str) -> str:
    """The interpreter a spare runs in: the command's own python, or this one (trainyard-launch and
    torchrun are scripts of the Python they were installed with, which is this one locally)."""
    prog = os.path.basename(command[0]) if command else ""
    if re.fullmatch(r"python(\d+(\.\d+)?)?", prog):
        return shutil.which(command[0], path=path) or sys.executable
    return sys.executable


class SparePool:
    def __init__(self, directory: Path):
        self.directory = directory
        self.spares: list[Spare] = []
        self.unavailable: str | None = None  # why this job's command cannot run warm
        self._count = 0

    def tend(self, want: int, command: list[str], env: dict[str, str], cwd: str | None) -> str | None:
        """Reads what the spares said, drops dead ones and starts new ones up to `want`. Returns the
        reason the first time a spare says the command cannot run warm."""
        for s in self.spares:
            s.read()
        refused = next((s.unsupported for s in self.spares if s.unsupported), None)
        self.spares = [s for s in self.spares if s.unsupported is None and s.proc.poll() is None]
        if refused is not None and self.unavailable is None:
            self.unavailable = refused
            self.stop()
            return refused
        if self.unavailable is not None:
            return None
        while len(self.spares) < want:
            self.spares.append(self._start(command, env, cwd))
        return None

    def _start(self, command: list[str], env: dict[str, str], cwd: str | None) -> Spare:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / f"spare-{self._count}.log"
        self._count += 1
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        env = {**env, contract.ENV_WARM_FD: str(theirs.fileno())}
        for name in (contract.ENV_WARM_NICE, contract.ENV_WARM_TRACE):  # the runtime's own knobs, not the job's
            if name in os.environ:
                env[name] = os.environ[name]
        argv = [spare_python(command, env.get("PATH", "")), "-m", SPARE_MODULE, "--", *command]
        with open(log, "wb") as f:
            proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=cwd, pass_fds=[theirs.fileno()], start_new_session=True)
        theirs.close()
        return Spare(proc, ours, log)

    def take(self) -> Spare | None:
        for s in self.spares:
            s.read()
        for s in self.spares:
            if s.ready:
                self.spares.remove(s)
                return s
        return None

    def ready(self) -> int:
        for s in self.spares:
            s.read()
        return sum(s.ready for s in self.spares)

    def memory(self) -> list[dict[str, int]]:
        """rss, pss and uss (bytes) of every ready spare."""
        out = []
        for s in self.spares:
            if s.ready:
                with contextlib.suppress(psutil.Error):
                    m = psutil.Process(s.proc.pid).memory_full_info()
                    out.append({"rss": m.rss, "pss": getattr(m, "pss", 0), "uss": m.uss})
        return out

    def stop(self) -> None:
        """Retires every spare; those that do not exit within a grace are killed. Leaves none behind."""
        spares, self.spares = self.spares, []
        for s in spares:
            s.retire()
        deadline = time.monotonic() + RETIRE_GRACE_SECONDS
        for s in spares:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(max(0.0, deadline - time.monotonic()))
            if s.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(s.proc.pid, 9)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    s.proc.wait(5)
