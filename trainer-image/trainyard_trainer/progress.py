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
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import TextIO

from . import heartbeat

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


class Progress:
    """Prints one progress line every ``log_every`` steps (rank 0 only) and beats every call.

    ``samples`` passed to :meth:`step` is what the step processed (pass the global batch,
    ``batch_size * world_size``, for a job-wide throughput); ``samples_per_s`` is the sum over the
    interval divided by its wall time.
    """

    def __init__(self, log_every: int = 10, *, rank: int | None = None, stream: TextIO | None = None):
        self.log_every = max(1, int(log_every))
        self.rank = current_rank() if rank is None else rank
        self._stream = stream
        self._samples = 0
        self._t0 = time.perf_counter()

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def emit(self, line: str) -> None:
        if self.rank == 0:
            print(line, file=self.stream, flush=True)

    def start(self, step: int, position: tuple[int, int, int] | None = None) -> None:
        """``starting from step=0`` or ``resumed from step=N [epoch=E sample=S/N]``; resets the throughput clock."""
        heartbeat.beat()
        self.emit(format_start(step, position))
        self._samples = 0
        self._t0 = time.perf_counter()

    def step(self, step: int, epoch: int, loss: float | None, samples: int = 0, *, force: bool = False) -> None:
        """Call after every optimizer step with the step number just completed (1-based)."""
        heartbeat.beat()
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
        heartbeat.beat()
        self.emit(format_done(step, accuracy))
