"""`trainyard run`: the engine driving local process trees until the job finishes (or Ctrl-C)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..api import DistributedTrainingJob, progress
from ..api.manifest import job_document
from ..api.validation import checked_job
from ..engine import Applied, reconcile
from ..engine.plan import Event
from .backend import LocalBackend, LocalWorker
from .injection import Injection

LOCAL_NAMESPACE = "local"


@dataclass
class RunResult:
    job: DistributedTrainingJob
    events: list[Event]
    first_step_seconds: float | None = None
    injected_at: float | None = None
    resumed_seconds: float | None = None  # from the injected kill to the first step logged after it
    resumed_from: int | None = None
    resumed_fields: dict | None = None  # the rest of the trainer's "resumed from" line (epoch, sample...)
    final: str | None = None  # the trainer's last "done ..." progress line


def load_job(path: str | os.PathLike, workers: int | None = None) -> DistributedTrainingJob:
    """A job from its YAML, refused as the apiserver would refuse it (InvalidSpec, with the
    apiserver's words), with `workers` in place of spec.workers when given."""
    obj, where = job_document(path)
    if isinstance(obj, dict):
        obj = {**obj, "metadata": {**(obj.get("metadata") or {})}}
        obj["metadata"].setdefault("namespace", LOCAL_NAMESPACE)
        obj["metadata"]["uid"] = f"local-{uuid.uuid4().hex[:12]}"
        if workers is not None and isinstance(obj.get("spec"), dict):
            obj["spec"] = {**obj["spec"], "workers": workers}
    return checked_job(obj, where)


class Runner:
    def __init__(self, job: DistributedTrainingJob, workdir: Path, checkpoint_dir: Path,
                 injection: Injection | None = None, on_event: Callable[[Event], None] | None = None,
                 on_line: Callable[[LocalWorker, str], None] | None = None, tick: float = 0.1,
                 backend_class: type[LocalBackend] = LocalBackend):
        self.injection = injection
        self.tick = tick
        self.events: list[Event] = []
        self._on_event = on_event
        self._on_line = on_line
        self.backend = backend_class(job, workdir, checkpoint_dir, on_line=self._line, on_event=self._event)
        self.result = RunResult(job, self.events)
        self._t0 = time.monotonic()
        self._stop = False

    def stop(self) -> None:
        """Ends run() at its next step: every worker's process tree is stopped (from another thread)."""
        self._stop = True

    @property
    def job(self) -> DistributedTrainingJob:
        return self.backend.job

    def _event(self, ev: Event) -> None:
        self.events.append(ev)
        if self._on_event:
            self._on_event(ev)

    def _line(self, w: LocalWorker, line: str) -> None:
        p = progress.parse_line(line)
        if p is not None:
            r, now = self.result, time.monotonic() - self._t0
            if p.kind == progress.DONE:
                r.final = line[line.index(progress.PREFIX) + len(progress.PREFIX):].strip()
            elif p.kind == progress.STEP:
                if r.first_step_seconds is None:
                    r.first_step_seconds = now
                if r.injected_at is not None and r.resumed_seconds is None and w.launch.attempt > 0:
                    r.resumed_seconds = now - r.injected_at
            elif p.kind == progress.RESUMED and r.injected_at is not None and r.resumed_from is None:
                r.resumed_from, r.resumed_fields = p.step, dict(p.fields)
        if self._on_line:
            self._on_line(w, line)

    def step(self) -> bool:
        """One reconcile; False once the job is finished and every process is gone."""
        plan, applied = reconcile(self.job, self.backend, datetime.now(UTC))
        if applied == Applied.DECIDE_AGAIN:  # a worker could not start: decide with that known
            plan, _ = reconcile(self.job, self.backend, datetime.now(UTC))
        self.result.job = self.job
        if self.injection and self.injection.due(self._t0, self.backend.live_steps()):
            self.injection.fired = True
            if self.backend.kill(self.injection.worker, self.injection.sig):
                self.result.injected_at = time.monotonic() - self._t0
                self._event(Event("Warning", "InjectedFailure",
                                  f"killed worker {self.injection.worker} with {self.injection.sig.name}"))
        if plan.delete_job:
            return False
        phase = self.job.status.phase
        return not (phase is not None and phase.terminal and not self.backend.active())

    def run(self, between: Callable[[], None] | None = None) -> RunResult:
        """Steps until the job is done; `between` runs after every step (the live view)."""
        try:
            while not self._stop and self.step():
                if between:
                    between()
                time.sleep(self.tick)
        finally:
            self.backend.shutdown()
        return self.result
