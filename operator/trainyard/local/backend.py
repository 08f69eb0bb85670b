"""The local backend: each worker is the trainer container's command, run with exactly the env a
pod would get, except that the rendezvous is on 127.0.0.1 (a fresh port per gang) and the
checkpoint volume is a local directory. Workers live under one directory:
<workdir>/attempt-<n>/worker-<i>.log, with the heartbeat file next to the log; the job's Lease is
<workdir>/lease/, one file per annotation (rank 0's progress report, worker 0's launcher start)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from ..api import DistributedTrainingJob, Phase, RestartMode, contract, progress, trainer_container
from ..api.progress import parse_launcher, parse_report
from ..api.spec import Runtime
from ..api.template import TRAINER_CONTAINER
from ..engine.backend import Applied
from ..engine.env import worker_env
from ..engine.plan import NORMAL, WARNING, Event, Launch, Plan
from ..engine.workers import LEASE, Child, Refusal, State, Worker
from .processes import alive, free_port, kill_tree, tree
from .spares import Spare, SparePool

STOP_GRACE_SECONDS = 5.0


@dataclass
class LocalWorker:
    launch: Launch
    proc: subprocess.Popen
    log_path: Path
    heartbeat: Path
    started: datetime
    finished: datetime | None = None
    tree: list[psutil.Process] = field(default_factory=list)
    progress: str = ""  # the newest progress line, for the live view
    step: int | None = None  # the newest training step
    training: bool = False  # a progress line has come: the trainer is past its start-up
    spare: Spare | None = None  # the warm spare it runs in (restartMode Warm), None when started cold
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
            p = progress.parse_line(line)
            if p is not None:
                self.progress = line[line.index(progress.PREFIX) + len(progress.PREFIX):].strip()
                self.training = True
                if p.kind == progress.STEP:
                    self.step = p.step
        return lines


def exit_status(returncode: int) -> tuple[int, str]:
    """(shell-style exit code, reason) of a Popen returncode."""
    if returncode < 0:
        return 128 - returncode, f"killed by {signal.Signals(-returncode).name}"
    return returncode, "Error"


def container_env(c: dict) -> dict[str, str]:
    """This machine's environment, this Python's bin directory first on PATH (where trainyard-launch
    and torchrun are), then the container's plain env values, as a pod's env overrides its image's.
    valueFrom and envFrom cannot be resolved here: `trainyard run` refuses them before it starts."""
    # The shell's own PET_*, TRAINYARD_*, RANK ... would override or confuse the rendezvous: the
    # worker gets exactly the pod's contract, as in a pod.
    env = {k: v for k, v in os.environ.items() if not contract.is_reserved_env(k)}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for e in c.get("env") or []:
        env[e["name"]] = str(e.get("value", ""))  # no value: the empty string, as in a pod
    return env


def working_dir(c: dict) -> str | None:
    """The container's workingDir when it exists here (it names a directory of the image), else
    the current directory."""
    wd = c.get("workingDir")
    return wd if wd and Path(wd).is_dir() else None


class LocalBackend:
    def __init__(self, job: DistributedTrainingJob, workdir: Path, checkpoint_dir: Path,
                 on_line: Callable[[LocalWorker, str], None] | None = None,
                 on_event: Callable[[Event], None] | None = None):
        self.job = job  # the job as last written: the local runtime's "apiserver"
        self.workdir = workdir
        self.checkpoint_dir = checkpoint_dir
        self.on_line = on_line
        self.on_event = on_event
        self.workers: dict[str, LocalWorker] = {}  # current and finished, until deleted
        self.refused: dict[str, tuple[Launch, Refusal]] = {}  # workers whose process could not start
        self.stopping: list[tuple[LocalWorker, float]] = []
        self.ports: dict[int, list[int]] = {}  # rendezvous attempt -> its ports: fresh ones per gang
        for file in contract.LOCAL_LEASE_FILES.values():  # a new job's Lease: nothing of an earlier run's
            with contextlib.suppress(FileNotFoundError):
                (self.lease_dir / file).unlink()
        self.pool = SparePool(workdir / "spares")  # restartMode Warm only

    # -- the backend contract
    @property
    def lease_dir(self) -> Path:
        return self.workdir / contract.LOCAL_LEASE_DIR

    def lease(self) -> Child:
        """The stand-in for the job's Lease: what rank 0 and worker 0's launcher last wrote there."""
        texts = {}
        for key, file in contract.LOCAL_LEASE_FILES.items():
            with contextlib.suppress(OSError):
                texts[key] = (self.lease_dir / file).read_text()
        return Child(LEASE, str(self.lease_dir), exists=True,
                     report=parse_report(texts.get(contract.ANNOTATION_PROGRESS)),
                     launcher=parse_launcher(texts.get(contract.ANNOTATION_LAUNCHER)))

    def observe(self, job: DistributedTrainingJob) -> tuple[list[Worker], list[Child]]:
        self.poll()
        out = [Worker(name, launch.index, launch.attempt, State.PENDING, exists=False, refusal=refusal)
               for name, (launch, refusal) in self.refused.items()]
        for name, w in self.workers.items():
            rc = w.proc.returncode
            if rc is None:
                out.append(Worker(name, w.launch.index, w.launch.attempt, State.RUNNING, ready=True,
                                  created_at=w.started, started_at=w.started, training=w.training))
            elif rc == 0:
                out.append(Worker(name, w.launch.index, w.launch.attempt, State.SUCCEEDED, exit_code=0,
                                  created_at=w.started, started_at=w.started, finished_at=w.finished))
            else:
                code, reason = exit_status(rc)
                hung = code == contract.HUNG_EXIT_CODE
                out.append(Worker(name, w.launch.index, w.launch.attempt, State.FAILED, exit_code=code,
                                  reason=reason, hung=hung, created_at=w.started, started_at=w.started,
                                  finished_at=w.finished, message=self.hung_line(w) if hung else ""))
        return out, [self.lease()]

    def apply(self, job: DistributedTrainingJob, plan: Plan) -> Applied:
        self.delete(plan.delete)
        if not self.create(job, plan.create):
            return Applied.DECIDE_AGAIN
        self.job = job.model_copy(update={"status": plan.status})
        for ev in plan.events:
            if self.on_event:
                self.on_event(ev)
        return Applied.DONE

    # -- processes
    def command(self, job: DistributedTrainingJob) -> list[str]:
        c = trainer_container(job.spec.template) or {}
        argv = [*(c.get("command") or []), *(c.get("args") or [])]
        if not argv:
            raise ValueError(f"spec.template container '{TRAINER_CONTAINER}' needs a command to run locally")
        return argv

    def env(self, job: DistributedTrainingJob, launch: Launch, heartbeat: Path) -> dict[str, str]:
        # A fresh port per gang (tensorflow: one per worker, all on this machine's loopback).
        count = job.spec.desired_workers if job.spec.runtime == Runtime.TENSORFLOW else 1
        ports = self.ports.setdefault(launch.rendezvous_attempt, [free_port() for _ in range(count)])
        peers = [f"127.0.0.1:{p}" for p in ports] if count > 1 or job.spec.runtime == Runtime.TENSORFLOW else None
        ours = worker_env(job, launch, "127.0.0.1", ports[0], str(self.checkpoint_dir), str(heartbeat), peers,
                          progress_dir=str(self.lease_dir))
        env = container_env(trainer_container(job.spec.template) or {})
        env.update({e["name"]: e["value"] for e in ours})
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def paths(self, launch: Launch) -> tuple[Path, Path]:
        d = self.workdir / contract.ATTEMPT_DIR.format(attempt=launch.attempt)
        return d / contract.WORKER_LOG.format(index=launch.index), d / contract.WORKER_HEARTBEAT.format(index=launch.index)

    def create(self, job: DistributedTrainingJob, launches: list[Launch]) -> bool:
        """Starts the workers; False if one could not start (a missing command, a bad env): it is
        remembered as a refusal that can never heal, and the engine fails the job with it."""
        ok = True
        warm: list[LocalWorker] = []
        cold: list[int] = []
        for launch in launches:
            log_path, heartbeat = self.paths(launch)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            cwd = working_dir(trainer_container(job.spec.template) or {})
            if launch.warm and (w := self._start_warm(job, launch, log_path, heartbeat, cwd)) is not None:
                self.workers[launch.name] = w
                warm.append(w)
                continue
            if launch.warm:
                cold.append(launch.index)
            try:
                with open(log_path, "wb") as log:
                    proc = subprocess.Popen(self.command(job), env=self.env(job, launch, heartbeat), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                            start_new_session=True)
            except (OSError, ValueError) as e:
                now = datetime.now(UTC)
                self.refused[launch.name] = (launch, Refusal(422, "CannotStart", f"cannot start worker {launch.index}: "
                                                             f"{e}", now, now))
                ok = False
                continue
            self.workers[launch.name] = LocalWorker(launch, proc, log_path, heartbeat, datetime.now(UTC))
        self._say_how_started(warm, cold)
        return ok

    # -- warm spares (spec.failurePolicy.restartMode Warm)
    def _start_warm(self, job: DistributedTrainingJob, launch: Launch, log_path: Path, heartbeat: Path,
                    cwd: str | None) -> LocalWorker | None:
        spare = self.pool.take()
        if spare is None:
            return None
        if not spare.assign(self.env(job, launch, heartbeat), cwd, log_path):
            spare.retire()
            return None
        return LocalWorker(launch, spare.proc, log_path, heartbeat, datetime.now(UTC), spare=spare)

    def _say_how_started(self, warm: list[LocalWorker], cold: list[int]) -> None:
        if not self.on_event or not (warm or cold):
            return
        if warm:
            which = ", ".join(f"{w.launch.index} (pid {w.proc.pid}, warmed up in {w.spare.ready_after:.1f} s)"
                              for w in warm if w.spare is not None)
            self.on_event(Event(NORMAL, "WarmStart", f"attempt {warm[0].launch.attempt}: worker(s) {which} started "
                                                     "in warm spares"))
        if cold:
            why = self.pool.unavailable or "no warm spare was ready yet"
            self.on_event(Event(NORMAL, "ColdStart", f"worker(s) {', '.join(map(str, cold))} started cold: {why}"))

    def spares_wanted(self) -> int:
        """One spare per worker while a Warm job trains (Running): a gang restart then has a spare
        for every rank. None before the job first trains (spares would slow the gang's own
        start-up), during a restart, or once it has finished; none with inPlaceRestarts >= 1, where
        every trainyard-launch keeps a spare for its own in-place restarts (a gang restart past
        their budget is then cold)."""
        job = self.job
        if job.spec.failure_policy.restart_mode != RestartMode.WARM or job.status.phase != Phase.RUNNING:
            return 0
        if job.spec.failure_policy.in_place_restarts >= 1:
            return 0  # trainyard-launch keeps the spares of its own warm in-place restarts
        return job.spec.desired_workers

    def tend_spares(self) -> None:
        want = self.spares_wanted()
        if want == 0 and self.job.status.phase is not None and self.job.status.phase.terminal:
            self.pool.stop()
            return
        if want == 0:
            return
        c = trainer_container(self.job.spec.template) or {}
        try:
            command = self.command(self.job)
        except ValueError:
            return
        env = container_env(c)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        refused = self.pool.tend(want, command, env, working_dir(c))
        if refused is not None and self.on_event:
            self.on_event(Event(WARNING, "WarmUnavailable", f"spec.failurePolicy.restartMode Warm: this command "
                                                            f"cannot run in a warm spare ({refused}); restarts are cold"))

    def delete(self, names: list[str]) -> None:
        for name in names:
            w = self.workers.pop(name, None)
            if w is None:
                continue
            if w.proc.poll() is None:
                # One SIGTERM, to the worker's root only: trainyard-launch forwards it to torchrun,
                # which stops its workers; signalling the whole tree as well would interrupt that
                # shutdown with a second SIGTERM. Whatever is left after the grace is SIGKILLed.
                w.tree = tree(w.proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
                self.stopping.append((w, time.monotonic() + STOP_GRACE_SECONDS))

    def kill(self, index: int, sig: int = signal.SIGKILL) -> LocalWorker | None:
        """Kills a live worker's whole process tree, as a node failure would (--inject-failure)."""
        live = [w for w in self.workers.values() if w.launch.index == index and w.proc.poll() is None]
        if not live:
            return None
        w = max(live, key=lambda w: w.launch.attempt)
        kill_tree(w.proc.pid, sig)
        return w

    def live_steps(self) -> list[int]:
        return [w.step for w in self.workers.values() if w.step is not None and w.proc.poll() is None]

    def poll(self) -> None:
        for w in self.workers.values():
            for line in w.read_new_lines():
                if self.on_line:
                    self.on_line(w, line)
            if w.finished is None and w.proc.poll() is not None:
                w.finished = datetime.now(UTC)
        self.tend_spares()
        still = []
        for w, deadline in self.stopping:
            left = alive(w.tree)
            w.proc.poll()
            if left and time.monotonic() > deadline:
                if w.proc.returncode is None:  # and whatever it started since
                    left = alive([*left, *tree(w.proc.pid)])
                for p in left:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()
            if left or w.proc.returncode is None:
                still.append((w, deadline))
        self.stopping = still

    @staticmethod
    def hung_line(w: LocalWorker) -> str:
        with contextlib.suppress(OSError):
            for line in reversed(w.log_path.read_text(errors="replace").strip().splitlines()):
                if (i := line.find(contract.HUNG_MESSAGE_PREFIX)) >= 0:
                    return line[i:]
        return ""

    def active(self) -> bool:
        return any(w.proc.poll() is None for w in self.workers.values()) or bool(self.stopping)

    def shutdown(self) -> None:
        """Stops every process tree: SIGTERM, a grace period, then SIGKILL, and every spare. Leaves
        nothing behind."""
        self.pool.stop()
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
