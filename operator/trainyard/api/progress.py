"""Progress, read side: the progress-line grammar and the progress reports of the job's Lease; the
one parser of each that the operator package has.

A training script (through `trainyard_trainer.progress`, which writes these lines) prints::

    [trainyard] starting from step=0
    [trainyard] resumed from step=100 [key=value ...]
    [trainyard] step=120 epoch=3 loss=0.3412 samples_per_s=1534.2 [key=value ...]
    [trainyard] checkpoint step=120 stall_s=0.123 async=true
    [trainyard] done step=500 [accuracy=0.9712 ...]

Anything before the prefix (a log prefix, a kubelet timestamp, torchrun's `[default0]:`) is
ignored, and any extra key=value field is kept, so a newer trainer never breaks an older reader.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import contract

PREFIX = "[trainyard]"

START = "start"
RESUMED = "resumed"
STEP = "step"
CHECKPOINT = "checkpoint"
DONE = "done"

_KINDS = {"starting from": START, "resumed from": RESUMED, "checkpoint": CHECKPOINT, "done": DONE, None: STEP}
_LINE = re.compile(r"\[trainyard\] (?:(starting from|resumed from|checkpoint|done) )?step=(\d+)"
                   r"((?: [A-Za-z_][\w.]*=\S+)*)\s*$")


@dataclass(frozen=True)
class ProgressLine:
    kind: str
    step: int
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    if text in ("true", "false"):
        return text == "true"
    return text


def parse_line(line: str) -> ProgressLine | None:
    """The progress line in `line`, or None if it holds none."""
    m = _LINE.search(line.rstrip("\r\n"))
    if m is None:
        return None
    fields = {}
    for pair in m.group(3).split():
        key, value = pair.split("=", 1)
        fields[key] = _value(value)
    return ProgressLine(_KINDS[m.group(1)], int(m.group(2)), fields)


# -- progress reports: what rank 0 writes into the job's Lease (contract.ANNOTATION_PROGRESS), and
# worker 0's launcher next to it (contract.ANNOTATION_LAUNCHER). The trainer library writes them
# (trainyard_trainer.progress.Reporter); these are the one reader. A document that cannot be read
# is no report (None), never an error: a newer trainer never breaks an older operator.


@dataclass(frozen=True)
class Report:
    """Rank 0's newest progress report."""

    attempt: int  # TRAINYARD_ATTEMPT of the pod that sent it
    time: datetime  # when the reported step completed (or the process started training, if not `training`)
    step: int
    training: bool = True  # False: the start report (resumed or starting from `step`), no step since
    worker: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    samples_per_second: float | None = None
    steps_per_second: float | None = None
    start_step: int | None = None  # the step this process started from (its checkpoint's)
    start_time: datetime | None = None
    checkpoint_step: int | None = None  # the last completed checkpoint
    checkpoint_time: datetime | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LauncherStart:
    """Worker 0's trainyard-launch started torchrun: this gang can report (its token, RBAC and
    trainer library work)."""

    attempt: int
    time: datetime


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _doc(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def parse_report(text: str | None) -> Report | None:
    """The report in an annotation's value, or None if there is none it can read."""
    doc = _doc(text)
    if doc is None:
        return None
    attempt, step, when = _int(doc.get("attempt")), _int(doc.get("step")), parse_time(doc.get("time"))
    if attempt is None or step is None or when is None:
        return None
    metrics = {}
    raw = doc.get("metrics")
    if isinstance(raw, dict):
        for k, v in sorted(raw.items())[: contract.MAX_PROGRESS_METRICS]:
            if isinstance(k, str) and 0 < len(k) <= 63 and (f := _float(v)) is not None:
                metrics[k] = f
    return Report(
        attempt=attempt, time=when, step=step, training=doc.get("training") is not False,
        worker=_int(doc.get("worker")), total_steps=_int(doc.get("totalSteps")), loss=_float(doc.get("loss")),
        samples_per_second=_float(doc.get("samplesPerSecond")), steps_per_second=_float(doc.get("stepsPerSecond")),
        start_step=_int(doc.get("startStep")), start_time=parse_time(doc.get("startTime")),
        checkpoint_step=_int(doc.get("checkpointStep")), checkpoint_time=parse_time(doc.get("checkpointTime")),
        metrics=metrics,
    )


def parse_launcher(text: str | None) -> LauncherStart | None:
    doc = _doc(text)
    if doc is None:
        return None
    attempt, when = _int(doc.get("attempt")), parse_time(doc.get("time"))
    return None if attempt is None or when is None else LauncherStart(attempt, when)


def parse_rendezvous(text: str | None) -> tuple[int, str] | None:
    """(attempt, worker 0's pod IP) that the operator published, or None."""
    doc = _doc(text)
    if doc is None:
        return None
    attempt, ip = _int(doc.get("attempt")), doc.get("ip")
    return None if attempt is None or not isinstance(ip, str) or not ip else (attempt, ip)


def rendezvous_annotation(attempt: int, ip: str) -> str:
    return json.dumps({"attempt": attempt, "ip": ip}, sort_keys=True, separators=(",", ":"))


def human_duration(seconds: float) -> str:
    """kubectl's duration format (k8s.io/apimachinery/pkg/util/duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"
