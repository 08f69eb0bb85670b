"""Warm in-place restarts inside running workers (pods): ``trainyard-launch`` as the agent, when the
operator sets ``TRAINYARD_RESTART_MODE=Warm`` (spec.failurePolicy.restartMode Warm) and
``PET_MAX_RESTARTS`` >= 1 (inPlaceRestarts) for a fixed-size job with one process per worker.

It replaces torchrun's agent, which restarts its workers as new processes (an interpreter start and
an ``import torch`` each, 10-30 s), by a spare (:mod:`trainyard_trainer.warm`) that is already warm:

- Worker 0's launcher runs a tiny coordinator on the rendezvous port (``MASTER_PORT``), a line
  protocol over TCP with no torch in it; every launcher, worker 0's included, connects to it at
  ``MASTER_ADDR`` (worker 0's name, as for torchrun's c10d store).
- Each launcher runs its rank (``RANK``, ``WORLD_SIZE`` from the operator's env) in a spare, with
  ``MASTER_PORT`` = rendezvous port + 1 + generation and ``TORCHELASTIC_RESTART_COUNT`` =
  generation: every generation's process group has a store of its own on a port nobody used before,
  so a rank of an old generation can never join a new one. Meanwhile it warms the next spare (nice 10).
- A rank that exits non-zero is reported (``fail GEN RANK CODE``); the coordinator, for the current
  generation only and while the budget (``PET_MAX_RESTARTS``) lasts, tells everyone ``restart GEN+1``;
  every launcher SIGKILLs its own rank (the survivors' ranks are stuck in, or about to fail, a
  collective), waits for it to be gone, and hands the rank to its warm spare. Past the budget it says
  ``giveup``: the launcher of the rank that failed exits with that rank's code, the others with
  PEER_LOST_EXIT_CODE, and the operator restarts the gang as usual (new pods, counted).
- A rank that exits 0 is reported (``done``); when every rank of the generation is done the
  coordinator says ``finished`` and every launcher exits 0.
- A lost coordinator (worker 0's launcher died) or a coordinator that is not reachable within the
  join timeout ends the launcher with PEER_LOST_EXIT_CODE: never a wait without end. The heartbeat
  watchdog (progressDeadlineSeconds) works as in the torchrun path: exit HUNG_EXIT_CODE.

What the operator sees: nothing of the in-place restarts (as for torchrun's own --max-restarts):
the pods keep running; a restart past the budget is an ordinary failure. Each one is a line on the
launcher's stderr (``kubectl logs``): ``[trainyard-launch] in-place restart G of N (warm): rank R
exited with C``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from . import contract
from .heartbeat import touch

ENV_RESTART_MODE = contract.ENV_RESTART_MODE
HELLO_TIMEOUT = 5.0
PEER_LOST_GRACE = 0.5


def wanted(env: Mapping[str, str]) -> str | None:
    """Why this worker cannot do warm in-place restarts, or None when it can."""
    if (env.get(ENV_RESTART_MODE) or "") != "Warm":
        return "restartMode is not Warm"
    try:
        if int(env.get("PET_MAX_RESTARTS") or "0") < 1:
            return "inPlaceRestarts is 0"
        int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["MASTER_PORT"])
        env["MASTER_ADDR"]
    except (KeyError, ValueError):
        return "no fixed rank in the environment"
    return None


def _say(msg: str) -> None:
    print(f"[trainyard-launch] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the coordinator


def _messages(conn: socket.socket):
    """The words of each newline-ended line from `conn`, until it closes or fails."""
    buf = b""
    while True:
        try:
            chunk = conn.recv(4096)
        except OSError:
            chunk = b""
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode(errors="replace").split()


class Coordinator:
    """Worker 0's launcher: decides generations. One thread per connection; state under a lock."""

    def __init__(self, port: int, world: int, max_restarts: int):
        self.world, self.max_restarts = world, max_restarts
        self.gen, self.restarts = 0, 0
        self.done: set[int] = set()
        self.over = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server = socket.create_server(("", port), family=socket.AF_INET, backlog=128)  # SO_REUSEADDR
        self.pending: threading.Timer | None = None
        threading.Thread(target=self._accept, daemon=True, name="trainyard-coordinator").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _broadcast(self, line: str) -> None:
        for c in list(self.conns):
            with contextlib.suppress(OSError):
                c.sendall(line.encode() + b"\n")

    def _serve(self, conn: socket.socket) -> None:
        for msg in _messages(conn):
            self._handle(msg)

    def _handle(self, msg: list[str]) -> None:
        if len(msg) < 3:
            return
        with self.lock:
            kind, gen, rank = msg[0], int(msg[1]), int(msg[2])
            if self.over or gen != self.gen:
                return  # stale: a report about a generation already replaced
            if kind == "fail":
                code = int(msg[3]) if len(msg) > 3 else 1
                if code == contract.PEER_LOST_EXIT_CODE and self.pending is None:
                    # A survivor saying the gang broke under it: the rank that broke it is about to
                    # report too; wait a moment for it, so that the cause is the right one.
                    self.pending = threading.Timer(PEER_LOST_GRACE, self._decide, args=(gen, rank, code))
                    self.pending.daemon = True
                    self.pending.start()
                    return
                if code == contract.PEER_LOST_EXIT_CODE:
                    return
                if self.pending is not None:
                    self.pending.cancel()
                self._decide_locked(gen, rank, code)
            elif kind == "done":
                self.done.add(rank)
                if len(self.done) >= self.world:
                    self.over = True
                    self._broadcast("finished 0 0")

    def _decide(self, gen: int, rank: int, code: int) -> None:
        with self.lock:
            if not self.over and gen == self.gen:
                self._decide_locked(gen, rank, code)

    def _decide_locked(self, gen: int, rank: int, code: int) -> None:
        self.pending = None
        if self.restarts < self.max_restarts:
            self.restarts += 1
            self.gen += 1
            self.done.clear()
            self._broadcast(f"restart {self.gen} {rank} {code} {self.restarts}")
        else:
            self.over = True
            self._broadcast(f"giveup {gen} {rank} {code}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.close()


# ---------------------------------------------------------------------------- a spare, from the launcher


class Spare:
    def __init__(self, command: Sequence[str], env: Mapping[str, str], nice: int):
        ours, theirs = socket.socketpair()
        env = {**env, contract.ENV_WARM_FD: str(theirs.fileno()), contract.ENV_WARM_NICE: str(nice)}
        self.proc = subprocess.Popen([sys.executable, "-m", "trainyard_trainer.warm", "--", *command], env=env,
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self.sock = ours
        self.state: str | None = None  # "ready" or "unsupported ..."
        self.event = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while b"\n" not in buf:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
        self.state = buf.split(b"\n", 1)[0].decode(errors="replace") or f"exited {self.proc.poll()}"
        self.event.set()

    def wait(self, timeout: float) -> bool:
        self.event.wait(timeout)
        return bool(self.state and self.state.startswith("ready "))

    def assign(self, env: Mapping[str, str]) -> None:
        self.sock.sendall(json.dumps({"env": dict(env), "cwd": os.getcwd(), "log": None}).encode() + b"\n")
        self.sock.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


# ---------------------------------------------------------------------------- the agent


class WarmAgent:
    def __init__(self, command: Sequence[str], env: Mapping[str, str], join_timeout: float,
                 heartbeat_file: str | None = None, progress_deadline: float | None = None):
        self.command, self.env = list(command), dict(env)
        self.rank, self.world = int(env["RANK"]), int(env["WORLD_SIZE"])
        self.addr, self.port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
        self.max_restarts = int(env.get("PET_MAX_RESTARTS") or "0")
        self.join_timeout = join_timeout
        self.heartbeat_file, self.progress_deadline = heartbeat_file, progress_deadline
        self.msgs: queue.Queue[list[str]] = queue.Queue()
        self.forwarded: int | None = None
        self.coordinator: Coordinator | None = None

    def _forward(self, signum: int, _frame) -> None:
        self.forwarded = self.forwarded or signum
        self.msgs.put(["signal", str(signum)])

    def _connect(self) -> socket.socket | None:
        deadline = time.monotonic() + self.join_timeout
        while time.monotonic() < deadline and self.forwarded is None:
            try:
                s = socket.create_connection((self.addr, self.port), timeout=HELLO_TIMEOUT)
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return s
            except OSError:
                time.sleep(0.2)
        return None

    def _listen(self, conn: socket.socket) -> None:
        for msg in _messages(conn):
            self.msgs.put(msg)
        self.msgs.put(["lost"])

    def _rank_env(self, gen: int) -> dict[str, str]:
        return {**self.env, "MASTER_PORT": str(self.port + 1 + gen), "TORCHELASTIC_RESTART_COUNT": str(gen)}

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._forward)
        spare = Spare(self.command, self.env, nice=0)  # the first generation's: on the critical path
        if self.rank == 0:
            self.coordinator = Coordinator(self.port, self.world, self.max_restarts)
        conn = self._connect()
        if conn is None:
            spare.kill()
            if self.forwarded:
                return 128 + self.forwarded
            _say(f"cannot reach the in-place restart coordinator at {self.addr}:{self.port} within "
                 f"{self.join_timeout:g} s")
            return contract.PEER_LOST_EXIT_CODE
        threading.Thread(target=self._listen, args=(conn,), daemon=True).start()
        gen = 0
        nxt: Spare | None = None
        try:
            while True:
                if not spare.wait(self.join_timeout):
                    _say(f"the warm spare did not start ({spare.state}); giving up")
                    return 1
                spare.assign(self._rank_env(gen))
                child = spare
                if self.heartbeat_file:
                    with contextlib.suppress(OSError):
                        touch(self.heartbeat_file)
                if nxt is None and gen < self.max_restarts:
                    nxt = Spare(self.command, self.env, nice=int(os.environ.get(contract.ENV_WARM_NICE, "10") or 0))
                    threading.Thread(target=self._announce, args=(nxt, gen), daemon=True).start()
                outcome = self._watch(child, gen, conn)
                if outcome[0] == "restart":
                    gen = outcome[1]
                    spare, nxt = nxt or Spare(self.command, self.env, nice=0), None
                    continue
                return outcome[1]
        finally:
            if nxt is not None:
                nxt.kill()
            if self.coordinator is not None:
                time.sleep(0.2)  # let the last broadcast leave before the server goes
                self.coordinator.close()

    @staticmethod
    def _announce(spare: Spare, gen: int) -> None:
        if spare.wait(86400) and spare.state:
            _say(f"the spare for in-place restart {gen + 1} is warm (pid {spare.proc.pid}, "
                 f"{float(spare.state.split()[2]):.1f} s)")

    def _watch(self, child: Spare, gen: int, conn: socket.socket) -> tuple[str, int]:
        reported: int | None = None
        while True:
            code = child.proc.poll()
            if code is not None and reported is None:
                reported = 128 - code if code < 0 else code
                with contextlib.suppress(OSError):
                    conn.sendall((f"done {gen} {self.rank}" if reported == 0 else
                                  f"fail {gen} {self.rank} {reported}").encode() + b"\n")
            if self.heartbeat_file and self.progress_deadline and reported is None:
                with contextlib.suppress(OSError):
                    if time.time() - os.stat(self.heartbeat_file).st_mtime > self.progress_deadline:
                        child.kill()
                        msg = f"{contract.HUNG_MESSAGE_PREFIX}no training progress for {self.progress_deadline:g} s"
                        _say(msg)
                        return "exit", contract.HUNG_EXIT_CODE
            try:
                msg = self.msgs.get(timeout=0.02)
            except queue.Empty:
                continue
            kind = msg[0]
            if kind == "signal":
                child.kill()
                return "exit", 128 + int(msg[1])
            if kind == "lost":
                child.kill()
                if reported == 0:
                    return "exit", 0
                _say("lost the in-place restart coordinator (worker 0's launcher)")
                return "exit", reported or contract.PEER_LOST_EXIT_CODE
            if kind == "finished":
                return "exit", 0
            if kind == "restart" and int(msg[1]) > gen:
                child.kill()
                _say(f"in-place restart {msg[4] if len(msg) > 4 else msg[1]} of {self.max_restarts} (warm): rank "
                     f"{msg[2]} exited with {msg[3]}")
                return "restart", int(msg[1])
            if kind == "giveup":
                child.kill()
                if int(msg[2]) == self.rank:
                    return "exit", int(msg[3])
                return "exit", contract.PEER_LOST_EXIT_CODE
