"""status.progress, built from rank 0's newest report in the job's Lease (a Child both backends
observe: the Kubernetes Lease, or the local runtime's stand-in directory).

Writes are bounded: a progress change alone is written at most every PROGRESS_WRITE_SECONDS. It is
written at once when the reporting gang changes (a new gang's first report, or a restart marking
the last one stale: at most one write per gang start), and whenever the status is written anyway
(a phase change, the end of the job), so those never cost a write of their own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..api import DistributedTrainingJobStatus, Progress
from ..api.progress import LauncherStart, Report, human_duration
from .workers import LEASE, Child

PROGRESS_WRITE_SECONDS = 30


def lease_of(children: list[Child]) -> Child | None:
    return next((c for c in children if c.kind == LEASE), None)


def _of_gang(attempt: int | None, status: DistributedTrainingJobStatus) -> bool:
    """A report of the current gang: from a pod of an attempt since the last gang restart."""
    return attempt is not None and status.rendezvous_attempt <= attempt <= status.attempt


def gang_report(children: list[Child], status: DistributedTrainingJobStatus) -> Report | None:
    lease = lease_of(children)
    report = lease.report if lease is not None else None
    return report if report is not None and _of_gang(report.attempt, status) else None


def gang_launcher(children: list[Child], status: DistributedTrainingJobStatus) -> LauncherStart | None:
    lease = lease_of(children)
    launcher = lease.launcher if lease is not None else None
    return launcher if launcher is not None and _of_gang(launcher.attempt, status) else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def progress_of(report: Report, rendezvous_attempt: int) -> Progress:
    """status.progress from a report: percent and the ETA at the reported step rate; stale when
    the report is older than the current gang (which then shows no ETA)."""
    stale = report.attempt < rendezvous_attempt
    total, step = report.total_steps, report.step
    percent = eta = completion = None
    if total:
        percent = round(min(100.0, 100.0 * step / total), 1)
        if not stale:
            if step >= total:
                remaining: float | None = 0.0
            elif report.steps_per_second:
                remaining = (total - step) / report.steps_per_second
            else:
                remaining = None
            if remaining is not None and remaining < 10 * 365 * 86400:
                completion = report.time + timedelta(seconds=round(remaining))
                eta = human_duration(remaining)
    return Progress(
        step=step, total_steps=total, percent=percent, loss=_round(report.loss),
        samples_per_second=None if report.samples_per_second is None else round(report.samples_per_second, 1),
        last_checkpoint_step=report.checkpoint_step, last_checkpoint_time=report.checkpoint_time,
        estimated_completion_time=completion, eta=eta, updated_at=report.time, attempt=report.attempt,
        resumed_from_step=report.start_step if report.start_step else None, stale=True if stale else None,
        metrics={k: _round(v, 6) for k, v in report.metrics.items()} or None,
    )


def _content(p: Progress | None) -> dict[str, Any] | None:
    return None if p is None else p.model_dump(exclude={"observed_at"})


def _without_progress(status: DistributedTrainingJobStatus) -> dict[str, Any]:
    return status.model_dump(exclude={"progress"})


def newest_progress(children: list[Child], status: DistributedTrainingJobStatus) -> Progress | None:
    """What status.progress says now, unthrottled: the newest report of any attempt up to the
    current one, or the status's own progress (marked stale once the gang changed)."""
    lease = lease_of(children)
    report = lease.report if lease is not None else None
    if report is not None and report.attempt <= status.attempt:
        return progress_of(report, status.rendezvous_attempt)
    old = status.progress
    if old is not None and old.attempt is not None and old.attempt < status.rendezvous_attempt and not old.stale:
        return old.model_copy(update={"stale": True, "eta": None, "estimated_completion_time": None})
    return old


def update_progress(old_status: DistributedTrainingJobStatus, status: DistributedTrainingJobStatus,
                    children: list[Child], now: datetime) -> datetime | None:
    """Sets status.progress (the status a decision is writing; `old_status` is the one it read).
    Returns when to look again for a change the throttle held back, or None."""
    old = old_status.progress
    new = newest_progress(children, status)
    if new is None or _content(new) == _content(old):
        status.progress = old
        return None
    assert new is not None
    due = old is None or old.observed_at is None or now >= old.observed_at + timedelta(seconds=PROGRESS_WRITE_SECONDS)
    gang_changed = old is None or new.attempt != old.attempt or bool(new.stale) != bool(old.stale)
    written_anyway = _without_progress(status) != _without_progress(old_status)
    if due or gang_changed or written_anyway:
        status.progress = new.model_copy(update={"observed_at": now})
        return None
    status.progress = old
    assert old is not None and old.observed_at is not None
    return old.observed_at + timedelta(seconds=PROGRESS_WRITE_SECONDS)


def bar(percent: float, width: int = 24) -> str:
    filled = max(0, min(width, round(width * percent / 100)))
    return "█" * filled + "░" * (width - filled)


def progress_text(p: Progress, restarts: int = 0, disruptions: int = 0) -> str:
    """One line for a status.progress (the live views, describe, the SDK):
    "step 340/460 (73.9%), ETA 1m20s, loss 0.3412, ...; resumed at step 300 after restart 1"."""
    head = f"step {p.step}" + (f"/{p.total_steps}" if p.total_steps else "")
    if p.percent is not None:
        head += f" ({p.percent:g}%)"
    parts = [head]
    if p.stale:
        parts.append("from an earlier gang: the current one has not reported yet")
    elif p.eta:
        parts.append(f"ETA {p.eta}")
    if p.loss is not None:
        parts.append(f"loss {p.loss:g}")
    if p.samples_per_second:
        parts.append(f"{p.samples_per_second:g} samples/s")
    if p.last_checkpoint_step is not None:
        parts.append(f"last checkpoint step {p.last_checkpoint_step}")
    text = ", ".join(parts)
    if p.resumed_from_step and not p.stale:
        text += f"; resumed at step {p.resumed_from_step}"
        if restarts:
            text += f" after restart {restarts}"
        elif disruptions:
            text += f" after {disruptions} disruption{'s' if disruptions > 1 else ''}"
    return text
