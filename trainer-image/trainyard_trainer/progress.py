"""Progress lines: the one stable, parseable output of a Trainyard training script.

The formats (the operator's local runtime and the tests parse them; keep them stable)::

    [trainyard] starting from step=0
    [trainyard] resumed from step=100
    [trainyard] resumed from step=250 epoch=10 sample=1280/1437
    [trainyard] step=120 epoch=3 loss=0.3412 samples_per_s=1534.2
    [trainyard] checkpoint step=120 stall_s=0.123 async=true
    [trainyard] done step=500 accuracy=0.9712

The data position (``epoch=E sample=S/N``: S of the epoch's N samples already consumed) follows
the resumed step when the script passes it; ``resumed from step=N`` stays the line's prefix.
Only rank 0 prints (``RANK`` from torchrun; a process without it is rank 0) and every line is
flushed at once. Every call of :meth:`Progress.step` also calls :func:`heartbeat.beat`, on every rank.

Progress reports, the one heartbeat the operator reads (the progress display and its hang
detection, on Kubernetes and on a workstation)::

    from trainyard_trainer import progress
    progress.start(step, total_steps=1000)       # once the model and the data position are loaded
    for ...:
        ...
        progress.report(step, loss=loss.item(), samples=global_batch)   # after every optimizer step

:func:`report` costs a few microseconds and never blocks: it records the newest step and, on every
rank, touches the heartbeat file (at most once a second); rank 0's reporter thread sends it into
the job's Lease (``TRAINYARD_PROGRESS_LEASE``, one HTTPS PATCH with the pod's ServiceAccount token;
locally ``TRAINYARD_PROGRESS_DIR``) at most every ``TRAINYARD_PROGRESS_INTERVAL_SECONDS`` (10 s),
at once for a step that comes later than that. A report that cannot be sent is retried with the
newest step; training never waits for it. :class:`Progress` calls these for you, and the
:class:`~trainyard_trainer.checkpoint.Checkpointer` reports every checkpoint it completes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import sys
import threading
import time
from collections import deque
from typing import Any, NamedTuple, TextIO

from . import heartbeat
from .contract import (
    ANNOTATION_PROGRESS,
    ENV_ATTEMPT,
    ENV_PROGRESS_INTERVAL,
    ENV_WORKER_INDEX,
    MAX_PROGRESS_METRICS,
    PROGRESS_INTERVAL_SECONDS,
)
from .lease import LEASE_WAIT_SECONDS

PREFIX = "[trainyard]"

STEP_RE = re.compile(
    r"^\[trainyard\] step=(?P<step>\d+) epoch=(?P<epoch>\d+) loss=(?P<loss>[-+0-9.eEinfa]+) "
    r"samples_per_s=(?P<samples_per_s>[0-9.eEinfa+]+)$"
)
RESUMED_RE = re.compile(
    r"^\[trainyard\] resumed from step=(?P<step>\d+)"
    r"(?: epoch=(?P<epoch>\d+) sample=(?P<sample>\d+)/(?P<num_samples>\d+))?$"
)
STARTING_RE = re.compile(r"^\[trainyard\] starting from step=(?P<step>\d+)$")
CHECKPOINT_RE = re.compile(
    r"^\[trainyard\] checkpoint step=(?P<step>\d+) stall_s=(?P<stall_s>[0-9.]+) async=(?P<async>true|false)$"
)
DONE_RE = re.compile(r"^\[trainyard\] done step=(?P<step>\d+)(?: accuracy=(?P<accuracy>[0-9.]+))?$")


def format_step(step: int, epoch: int, loss: float, samples_per_s: float) -> str:
    return f"{PREFIX} step={step} epoch={epoch} loss={loss:.4f} samples_per_s={samples_per_s:.1f}"


def format_start(step: int, position: tuple[int, int, int] | None = None) -> str:
    """``position`` is ``(epoch, sample, num_samples)``, e.g. a ShardedSampler's ``position()``."""
    if step <= 0:
        return f"{PREFIX} starting from step=0"
    line = f"{PREFIX} resumed from step={step}"
    if position is not None:
        epoch, sample, num_samples = position
        line += f" epoch={int(epoch)} sample={int(sample)}/{int(num_samples)}"
    return line


def format_checkpoint(step: int, stall_s: float, asynchronous: bool) -> str:
    return f"{PREFIX} checkpoint step={step} stall_s={stall_s:.3f} async={'true' if asynchronous else 'false'}"


def format_done(step: int, accuracy: float | None = None) -> str:
    line = f"{PREFIX} done step={step}"
    if accuracy is not None:
        line += f" accuracy={accuracy:.4f}"
    return line


def current_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


# ---------------------------------------------------------------------------- progress reports


def _iso(t: float) -> str:
    from .lease import micro_time

    return micro_time(t)


class _Snapshot(NamedTuple):  # a tuple: cheap to make on the hot path
    step: int
    time: float  # wall clock of the step (or of the start)
    training: bool
    total_steps: int | None = None
    loss: Any = None  # a float, or a tensor converted off the hot path
    samples: int = 0  # cumulative samples since the start
    metrics: dict[str, Any] | None = None
    checkpoint_step: int | None = None
    checkpoint_time: float | None = None


def _number(value: Any) -> float | None:
    try:
        f = float(value)  # a 0-d tensor too
    except (TypeError, ValueError, RuntimeError):
        return None
    return f if math.isfinite(f) else None


class Reporter:
    """Sends rank 0's progress to the job's Lease from a thread of its own (see the module doc).

    ``lease`` is a :class:`~trainyard_trainer.lease.LeaseClient` or ``LeaseDir`` (None: reports go
    nowhere, as on every rank but 0). The hot path (:meth:`report`) only records and, when a send is
    due, sets an event; the thread sends the newest record, computes the step and sample rates over
    its last few sends, and retries after ``interval`` when a send fails.
    """

    WINDOW = 6  # sends the rates are computed over

    def __init__(self, lease: Any = None, *, interval: float = PROGRESS_INTERVAL_SECONDS, attempt: int = 0,
                 worker: int | None = None, holder: str | None = None, clock=time.time, stream: TextIO | None = None):
        self.lease = lease
        self.interval = max(0.05, float(interval))
        self.attempt, self.worker, self.holder = attempt, worker, holder
        self._clock = clock
        self._stream = stream
        self._pending: _Snapshot | None = None
        self._sent: _Snapshot | None = None
        self._start: _Snapshot | None = None
        self._history: deque[_Snapshot] = deque(maxlen=self.WINDOW)
        self._next_send = 0.0  # monotonic
        self._wake = threading.Event()
        self._idle = False
        self._closing = False
        self._flushing = False
        self._thread: threading.Thread | None = None
        self._failed = False  # the last send failed (said once per failure streak)
        self._retrying = False  # the last send failed: the next waits for _next_send, even a start's
        self._born = time.monotonic()
        self.sends = 0
        self.failures = 0
        self.last_error: str | None = None

    @classmethod
    def from_env(cls, env=None) -> Reporter:
        """Rank 0's reporter to the Lease the operator named; on any other rank one that sends nothing."""
        from .lease import lease_from_env

        env = os.environ if env is None else env
        try:
            interval = float(env.get(ENV_PROGRESS_INTERVAL) or PROGRESS_INTERVAL_SECONDS)
        except ValueError:
            interval = PROGRESS_INTERVAL_SECONDS
        try:
            attempt = int(env.get(ENV_ATTEMPT) or 0)
            worker = int(env[ENV_WORKER_INDEX]) if env.get(ENV_WORKER_INDEX) else None
        except ValueError:
            attempt, worker = 0, None
        lease = lease_from_env(env) if _rank_of(env) == 0 else None
        return cls(lease, interval=interval, attempt=attempt, worker=worker,
                   holder=env.get("HOSTNAME") or None)

    @property
    def active(self) -> bool:
        return self.lease is not None

    # -- the hot path
    def start(self, step: int = 0, total_steps: int | None = None) -> None:
        """The process starts training at ``step`` (resumed from a checkpoint, or 0): sent at once."""
        if self.lease is None:
            return
        snap = _Snapshot(int(step), self._clock(), False, total_steps)
        self._start = snap
        self._history.clear()
        self._put(snap, urgent=True)

    def report(self, step: int, total_steps: int | None = None, loss: Any = None, *, samples: int | None = None,
               **metrics: Any) -> None:
        """The optimizer step ``step`` completed. Cheap, never blocks, never raises."""
        if self.lease is None:
            return
        prev = self._pending
        if prev is None:
            snap = _Snapshot(int(step), self._clock(), True, total_steps, loss, samples or 0, metrics or None)
        else:  # the newest value of each field stays until another is reported
            snap = _Snapshot(
                int(step), self._clock(), True, prev.total_steps if total_steps is None else total_steps,
                prev.loss if loss is None else loss, prev.samples + (samples or 0),
                ({**prev.metrics, **metrics} if prev.metrics else metrics) if metrics else prev.metrics,
                prev.checkpoint_step, prev.checkpoint_time)
        self._put(snap)

    def checkpointed(self, step: int, when: float | None = None) -> None:
        """A checkpoint of ``step`` completed (the Checkpointer calls this, maybe from its thread)."""
        if self.lease is None:
            return
        prev = self._pending or _Snapshot(int(step), self._clock(), False)
        self._put(prev._replace(checkpoint_step=int(step), checkpoint_time=self._clock() if when is None else when))

    def _put(self, snap: _Snapshot, urgent: bool = False) -> None:
        self._pending = snap
        if self._thread is None:
            self._start_thread()
        if urgent or self._idle or time.monotonic() >= self._next_send:
            self._wake.set()

    # -- the thread
    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="trainyard-progress", daemon=True)
        self._thread.start()
        atexit.register(self.close, 2.0)

    def _run(self) -> None:
        while True:
            pending = self._pending
            if pending is not None and pending is not self._sent:
                delay = self._next_send - time.monotonic()
                # a start, or the first step after one, is sent at once: the startup budget begins or ends
                at_once = not self._retrying and (self._sent is None or pending.training != self._sent.training)
                if delay <= 0 or self._flushing or at_once:
                    self._send(pending)
                    continue
                self._wake.wait(delay)
            elif self._closing:
                return
            else:
                self._idle = True
                if self._pending is self._sent and not self._closing:
                    self._wake.wait()
                self._idle = False
            self._wake.clear()

    def document(self, snap: _Snapshot) -> dict[str, Any]:
        """The report as the Lease annotation holds it (contract.PROGRESS_FIELDS)."""
        doc: dict[str, Any] = {"attempt": self.attempt, "time": _iso(snap.time), "step": snap.step,
                               "training": snap.training}
        if self.worker is not None:
            doc["worker"] = self.worker
        if snap.total_steps is not None:
            doc["totalSteps"] = int(snap.total_steps)
        if snap.training and (loss := _number(snap.loss)) is not None:
            doc["loss"] = loss
        base = next((h for h in self._history if h.training), None)
        if snap.training and base is not None and snap.time > base.time:
            dt = snap.time - base.time
            doc["stepsPerSecond"] = round((snap.step - base.step) / dt, 4)
            if snap.samples > base.samples:
                doc["samplesPerSecond"] = round((snap.samples - base.samples) / dt, 2)
        if self._start is not None:
            doc["startStep"], doc["startTime"] = self._start.step, _iso(self._start.time)
        if snap.checkpoint_step is not None:
            doc["checkpointStep"] = snap.checkpoint_step
            if snap.checkpoint_time is not None:
                doc["checkpointTime"] = _iso(snap.checkpoint_time)
        numbers = ((k, _number(v)) for k, v in sorted((snap.metrics or {}).items())[:MAX_PROGRESS_METRICS])
        metrics = {k: v for k, v in numbers if v is not None}
        if metrics:
            doc["metrics"] = metrics
        return doc

    def _send(self, snap: _Snapshot) -> None:
        self._next_send = time.monotonic() + self.interval
        try:
            text = json.dumps(self.document(snap), separators=(",", ":"))
            self.lease.patch({ANNOTATION_PROGRESS: text}, holder=self.holder, renew=True)
        except Exception as e:  # noqa: BLE001 - nothing a report does may break training
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            self._retrying = True
            if (self.sends == 0 and getattr(e, "not_made_yet", False)
                    and time.monotonic() - self._born < LEASE_WAIT_SECONDS and not (self._flushing or self._closing)):
                # The operator makes the Lease once worker 0 has its pod IP: soon, and not a fault.
                self._next_send = time.monotonic() + min(1.0, self.interval)
                return
            if not self._failed:
                self._failed = True
                with contextlib.suppress(Exception):
                    print(f"{PREFIX} progress report failed (retrying every {self.interval:g} s): {self.last_error}",
                          file=self._stream or sys.stderr, flush=True)
            if self._flushing or self._closing:
                self._sent = snap  # do not spin on a flush that cannot succeed
            return
        self._failed = self._retrying = False
        self.sends += 1
        self._sent = snap
        if snap.training:
            self._history.append(snap)

    def flush(self, timeout: float = 2.0) -> bool:
        """Send the newest report now; True once it is sent (or nothing was pending)."""
        if self._thread is None or self._pending is None:
            return True
        target = self._pending
        self._flushing = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        try:
            while self._sent is not target and time.monotonic() < deadline and self._thread.is_alive():
                time.sleep(0.01)
        finally:
            self._flushing = False
        return self._sent is target and not self._failed

    def close(self, timeout: float = 2.0) -> None:
        """Flush and stop the thread (at exit too)."""
        if self._thread is None:
            return
        self.flush(timeout)
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        with contextlib.suppress(Exception):
            if self.lease is not None:
                self.lease.close()


def _rank_of(env) -> int:
    try:
        return int(env.get("RANK", "0"))
    except ValueError:
        return 0


_reporter: Reporter | None = None
_reporter_lock = threading.Lock()


def reporter() -> Reporter:
    """This process's reporter, configured from the environment the operator set."""
    global _reporter
    if _reporter is None:
        with _reporter_lock:
            if _reporter is None:
                _reporter = Reporter.from_env()
    return _reporter


def set_reporter(r: Reporter | None) -> None:
    """Replace this process's reporter (tests, or a custom one); None: configure from the environment again."""
    global _reporter
    _reporter = r


def start(step: int = 0, total_steps: int | None = None) -> None:
    """Training (re)starts at ``step``: the startup budget of hang detection applies until the next
    :func:`report`. Call it once the model and the data position are loaded."""
    heartbeat.starting()
    reporter().start(step, total_steps)


def report(step: int, total_steps: int | None = None, loss: Any = None, *, samples: int | None = None,
           **metrics: Any) -> None:
    """Optimizer step ``step`` (1-based) completed. ``samples``: what it processed, all ranks together
    (for samples/s); ``metrics``: extra numbers (at most 16 are kept). Every rank may call it; only
    rank 0 sends. Cheap and never blocking (see the module doc)."""
    heartbeat.beat()
    reporter().report(step, total_steps, loss, samples=samples, **metrics)


def checkpointed(step: int, when: float | None = None) -> None:
    """A checkpoint of ``step`` is complete (durable): status.progress.lastCheckpointStep."""
    reporter().checkpointed(step, when)


def flush(timeout: float = 2.0) -> bool:
    """Send the newest report now (at the end of training, say); True once sent."""
    return reporter().flush(timeout)


class Progress:
    """Prints one progress line every ``log_every`` steps (rank 0 only), beats the heartbeat and
    reports every step to the job's Lease (:func:`report`).

    ``samples`` passed to :meth:`step` is what the step processed (pass the global batch,
    ``batch_size * world_size``, for a job-wide throughput); ``samples_per_s`` is the sum over the
    interval divided by its wall time. ``total_steps`` (when known) gives the percentage and the ETA.
    """

    def __init__(self, log_every: int = 10, *, rank: int | None = None, stream: TextIO | None = None,
                 total_steps: int | None = None, reporter: Reporter | None = None):
        self.log_every = max(1, int(log_every))
        self.rank = current_rank() if rank is None else rank
        self.total_steps = total_steps
        self._stream = stream
        self._reporter = reporter
        self._samples = 0
        self._t0 = time.perf_counter()

    @property
    def reporter(self) -> Reporter:
        return self._reporter if self._reporter is not None else reporter()

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def emit(self, line: str) -> None:
        if self.rank == 0:
            print(line, file=self.stream, flush=True)

    def start(self, step: int, position: tuple[int, int, int] | None = None) -> None:
        """``starting from step=0`` or ``resumed from step=N [epoch=E sample=S/N]``; resets the throughput clock
        and reports the start (the startup budget of hang detection applies until the first step)."""
        heartbeat.starting()
        self.reporter.start(step, self.total_steps)
        self.emit(format_start(step, position))
        self._samples = 0
        self._t0 = time.perf_counter()

    def step(self, step: int, epoch: int, loss: float | None, samples: int = 0, *, force: bool = False) -> None:
        """Call after every optimizer step with the step number just completed (1-based)."""
        heartbeat.beat()
        self.reporter.report(step, self.total_steps, loss, samples=samples)
        self._samples += samples
        if not force and step % self.log_every:
            return
        now = time.perf_counter()
        elapsed = now - self._t0
        rate = self._samples / elapsed if elapsed > 0 else 0.0
        self.emit(format_step(step, epoch, float("nan") if loss is None else float(loss), rate))
        self._samples = 0
        self._t0 = now

    def checkpoint(self, step: int, stall_s: float, asynchronous: bool) -> None:
        heartbeat.beat()
        self.emit(format_checkpoint(step, stall_s, asynchronous))

    def done(self, step: int, accuracy: float | None = None) -> None:
        """The last line; the final report is sent before this returns (2 s at most)."""
        heartbeat.beat()
        r = self.reporter
        if accuracy is not None:
            r.report(step, self.total_steps, None, accuracy=accuracy)
        r.flush(2.0)
        self.emit(format_done(step, accuracy))
