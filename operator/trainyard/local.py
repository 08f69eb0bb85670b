"""The workstation runtime: the same DistributedTrainingJob YAML, run as local processes.

A local-process backend for the same decision engine the operator uses: each worker is the
trainer container's command with exactly the env a pod would get, except that the rendezvous
is on 127.0.0.1 and the checkpoint volume is a local directory. Failure policy, gang restarts
with a new rendezvous id, backoff, deadlines and hang detection all come from `engine.decide`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from . import reasons as R
from .api import TRAINER_CONTAINER, DistributedTrainingJob, Phase, semantic_errors, trainer_container
from .builders import worker_env
from .engine import Event, Launch, decide
from .workers import State, Worker

PROGRESS = re.compile(r"\[trainyard\] (.*)")
STOP_GRACE_SECONDS = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(pid: int, sig: int) -> list[psutil.Process]:
    """Signals a process and every descendant (torchrun's agents and workers start their own)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)
    return procs


@dataclass
class LocalWorker:
    launch: Launch
    proc: subprocess.Popen
    log_path: Path
    heartbeat: Path
    started: datetime
    finished: datetime | None = None
    tree: list[psutil.Process] = field(default_factory=list)
    progress: str = ""
    _offset: int = 0

    def read_new_lines(self) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data.rsplit(b"\n", 1)[0] if b"\n" in data else b""
        if not complete:
            return []
        self._offset += len(complete) + 1
        lines = complete.decode(errors="replace").splitlines()
        for line in lines:
            m = PROGRESS.search(line)
            if m:
                self.progress = m.group(1)
        return lines


class LocalBackend:
    """Workers as process trees under one directory: <workdir>/attempt-<n>/worker-<i>.log."""

    def __init__(self, job: DistributedTrainingJob, workdir: Path, checkpoint_dir: Path,
                 on_line: Callable[[LocalWorker, str], None] | None = None):
        self.job = job
        self.workdir = workdir
        self.checkpoint_dir = checkpoint_dir
        self.on_line = on_line
        self.workers: dict[str, LocalWorker] = {}  # current and finished, until deleted
        self.stopping: list[tuple[LocalWorker, float]] = []
        self.ports: dict[int, int] = {}  # rendezvous attempt -> port: a fresh one per gang

    def command(self) -> list[str]:
        c = trainer_container(self.job.spec.template) or {}
        argv = [*(c.get("command") or []), *(c.get("args") or [])]
        if not argv:
            raise ValueError(f"spec.template container '{TRAINER_CONTAINER}' needs a command to run locally")
        return argv

    def env(self, launch: Launch, heartbeat: Path) -> dict[str, str]:
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        port = self.ports.setdefault(launch.rendezvous_attempt, free_port())
        job = self.job.model_copy(deep=True)
        job.spec.rendezvous.port = port
        ours = worker_env(job, launch, "127.0.0.1", str(self.checkpoint_dir), str(heartbeat))
        c = trainer_container(self.job.spec.template) or {}
        for e in c.get("env") or []:
            if "value" not in e:
                raise ValueError(f"env {e.get('name')}: only plain values work locally (no valueFrom)")
            env[e["name"]] = str(e["value"])
        env.update({e["name"]: e["value"] for e in ours})
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def create(self, launches: list[Launch]) -> None:
        for launch in launches:
            d = self.workdir / f"attempt-{launch.attempt}"
            d.mkdir(parents=True, exist_ok=True)
            log_path = d / f"worker-{launch.index}.log"
            heartbeat = d / f"worker-{launch.index}.heartbeat"
            c = trainer_container(self.job.spec.template) or {}
            cwd = c.get("workingDir") if c.get("workingDir") and Path(c["workingDir"]).is_dir() else None
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(self.command(), env=self.env(launch, heartbeat), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                        start_new_session=True)
            self.workers[launch.name] = LocalWorker(launch, proc, log_path, heartbeat, datetime.now(UTC))

    def delete(self, names: list[str]) -> None:
        for name in names:
            w = self.workers.pop(name, None)
            if w is None:
                continue
            if w.proc.poll() is None:
                w.tree = kill_tree(w.proc.pid, signal.SIGTERM)
                self.stopping.append((w, time.monotonic() + STOP_GRACE_SECONDS))

    def kill(self, index: int, sig: int = signal.SIGKILL) -> LocalWorker | None:
        """Kills a live worker's whole process tree, as a node failure would (--inject-failure)."""
        live = [w for w in self.workers.values() if w.launch.index == index and w.proc.poll() is None]
        if not live:
            return None
        w = max(live, key=lambda w: w.launch.attempt)
        kill_tree(w.proc.pid, sig)
        return w

    def poll(self) -> None:
        for w in self.workers.values():
            for line in w.read_new_lines():
                if self.on_line:
                    self.on_line(w, line)
            if w.finished is None and w.proc.poll() is not None:
                w.finished = datetime.now(UTC)
        still = []
        for w, deadline in self.stopping:
            alive = [p for p in w.tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            w.proc.poll()
            if alive and time.monotonic() > deadline:
                for p in alive:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()
            if alive or w.proc.returncode is None:
                still.append((w, deadline))
        self.stopping = still

    def observe(self) -> list[Worker]:
        self.poll()
        out = []
        for name, w in self.workers.items():
            rc = w.proc.returncode
            last = None
            with contextlib.suppress(FileNotFoundError):
                last = datetime.fromtimestamp(w.heartbeat.stat().st_mtime, UTC)
            base = Worker(name, w.launch.index, w.launch.attempt, State.RUNNING, ready=True,
                          created_at=w.started, last_progress=last)
            if rc is None:
                out.append(base)
            elif rc == 0:
                out.append(Worker(name, w.launch.index, w.launch.attempt, State.SUCCEEDED, exit_code=0,
                                  created_at=w.started, finished_at=w.finished))
            else:
                code, reason = (128 - rc, f"killed by {signal.Signals(-rc).name}") if rc < 0 else (rc, "Error")
                hung = code == R.HUNG_EXIT_CODE
                out.append(Worker(name, w.launch.index, w.launch.attempt, State.FAILED, exit_code=code,
                                  reason=reason, hung=hung, created_at=w.started, finished_at=w.finished,
                                  message=self.tail(w) if hung else ""))
        return out

    @staticmethod
    def tail(w: LocalWorker) -> str:
        with contextlib.suppress(OSError):
            lines = w.log_path.read_text(errors="replace").strip().splitlines()
            for line in reversed(lines):
                if line.startswith("Hung"):
                    return line
        return ""

    def active(self) -> bool:
        return any(w.proc.poll() is None for w in self.workers.values()) or bool(self.stopping)

    def shutdown(self) -> None:
        """Stops every process tree: SIGTERM, a grace period, then SIGKILL. Leaves nothing behind."""
        self.delete([n for n, w in self.workers.items() if w.proc.poll() is None])
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 2
        while self.stopping and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)
        for w, _ in self.stopping:
            for p in w.tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(2)
        self.stopping = []


@dataclass
class Injection:
    """`--inject-failure worker=1,after=30s` or `worker=1,at-step=40` (signal=KILL by default)."""

    worker: int
    after: float | None = None
    at_step: int | None = None
    sig: int = signal.SIGKILL
    fired: bool = False

    @classmethod
    def parse(cls, text: str) -> Injection:
        fields = dict(part.split("=", 1) for part in text.split(",") if part)
        unknown = set(fields) - {"worker", "after", "at-step", "signal"}
        if unknown or "worker" not in fields or not ({"after", "at-step"} & fields.keys()):
            raise ValueError(f"--inject-failure {text!r}: expected worker=N,after=30s or worker=N,at-step=N "
                             "[,signal=KILL]")
        sig = fields.get("signal", "KILL").upper()
        return cls(
            worker=int(fields["worker"]),
            after=float(fields["after"].rstrip("s")) if "after" in fields else None,
            at_step=int(fields["at-step"]) if "at-step" in fields else None,
            sig=signal.Signals[sig if sig.startswith("SIG") else f"SIG{sig}"],
        )

    def due(self, backend: LocalBackend, started: float) -> bool:
        if self.fired:
            return False
        if self.after is not None and time.monotonic() - started >= self.after:
            return True
        if self.at_step is not None:
            for w in backend.workers.values():
                m = re.search(r"\bstep=(\d+)", w.progress)
                if m and int(m.group(1)) >= self.at_step and w.proc.poll() is None:
                    return True
        return False


@dataclass
class RunResult:
    job: DistributedTrainingJob
    events: list[Event]
    first_step_seconds: float | None = None
    injected_at: float | None = None
    resumed_seconds: float | None = None  # from the injected kill to the first step logged after it
    resumed_from: int | None = None
    final: str | None = None  # the trainer's last "done ..." progress line


def load_job(path: Path, workers: int | None = None) -> DistributedTrainingJob:
    import yaml

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "DistributedTrainingJob"]
    if len(jobs) != 1:
        raise ValueError(f"{path}: expected one DistributedTrainingJob, found {len(jobs)}")
    obj = jobs[0]
    obj.setdefault("metadata", {})
    obj["metadata"].setdefault("namespace", "local")
    obj["metadata"]["uid"] = f"local-{uuid.uuid4().hex[:12]}"
    if workers is not None:
        obj.setdefault("spec", {})["workers"] = workers
    job = DistributedTrainingJob.from_dict(obj)
    errors = semantic_errors(job)
    if errors:
        raise ValueError("; ".join(errors))
    return job


class Runner:
    """Drives the engine against local processes until the job finishes (or Ctrl-C)."""

    def __init__(self, job: DistributedTrainingJob, workdir: Path, checkpoint_dir: Path,
                 injection: Injection | None = None, on_event: Callable[[Event], None] | None = None,
                 on_line: Callable[[LocalWorker, str], None] | None = None, tick: float = 0.1):
        self.job = job
        self.injection = injection
        self.on_event = on_event
        self.tick = tick
        self.events: list[Event] = []
        self._user_on_line = on_line
        self.backend = LocalBackend(job, workdir, checkpoint_dir, on_line=self._line)
        self.result = RunResult(job, self.events)
        self._t0 = time.monotonic()

    def _line(self, w: LocalWorker, line: str) -> None:
        done = re.search(r"\[trainyard\] (done .*)", line)
        if done:
            self.result.final = done.group(1)
        m = re.search(r"\[trainyard\] (?:step=(\d+)|resumed from step=(\d+))", line)
        if m:
            now = time.monotonic() - self._t0
            if m.group(1) and self.result.first_step_seconds is None:
                self.result.first_step_seconds = now
            if m.group(2) and self.result.injected_at is not None and self.result.resumed_from is None:
                self.result.resumed_from = int(m.group(2))
            if (m.group(1) and self.result.injected_at is not None and self.result.resumed_seconds is None
                    and w.launch.attempt > 0):
                self.result.resumed_seconds = now - self.result.injected_at
        if self._user_on_line:
            self._user_on_line(w, line)

    def step(self) -> bool:
        """One reconcile; False once the job is finished and every process is gone."""
        now = datetime.now(UTC)
        plan = decide(self.job, self.backend.observe(), now)
        self.job = self.job.model_copy(update={"status": plan.status})
        self.result.job = self.job
        for ev in plan.events:
            self.events.append(ev)
            if self.on_event:
                self.on_event(ev)
        self.backend.delete(plan.delete)
        self.backend.create(plan.create)
        if self.injection and self.injection.due(self.backend, self._t0):
            self.injection.fired = True
            if self.backend.kill(self.injection.worker, self.injection.sig):
                self.result.injected_at = time.monotonic() - self._t0
                ev = Event("Warning", "InjectedFailure",
                           f"killed worker {self.injection.worker} with {self.injection.sig.name}")
                self.events.append(ev)
                if self.on_event:
                    self.on_event(ev)
        if plan.delete_job:
            return False
        phase = self.job.status.phase
        return not (phase is not None and phase.terminal and not self.backend.active())

    def run(self) -> RunResult:
        try:
            while self.step():
                time.sleep(self.tick)
        finally:
            self.backend.shutdown()
        return self.result


def succeeded(job: DistributedTrainingJob) -> bool:
    return job.status.phase == Phase.SUCCEEDED

