from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trainyard.api import DistributedTrainingJob
from trainyard.api.progress import LauncherStart, Report
from trainyard.engine.workers import LEASE, Child, State, Worker

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
UID = "0b7d1c2e-uid"

BASE: dict[str, Any] = {
    "apiVersion": "trainyard.dev/v1alpha1",
    "kind": "DistributedTrainingJob",
    "metadata": {"name": "demo", "namespace": "ml", "uid": UID, "generation": 1},
    "spec": {
        "workers": 2,
        "template": {"spec": {"containers": [{"name": "trainer", "image": "img:1", "command": ["trainyard-launch", "t.py"]}]}},
    },
}


def merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_job(spec: dict | None = None, status: dict | None = None, **meta: Any) -> DistributedTrainingJob:
    obj = merge(BASE, {"spec": spec or {}, "metadata": meta})
    obj["status"] = status or {}
    return DistributedTrainingJob.from_dict(obj)


def then(job: DistributedTrainingJob, plan: Any, spec: dict | None = None) -> DistributedTrainingJob:
    """The job as the next reconcile reads it: the status the plan wrote (and a spec change)."""
    out = job.model_copy(update={"status": plan.status.model_copy(deep=True)})
    if spec:
        raw = merge(out.spec.model_dump(by_alias=True, exclude_none=True, mode="json"), spec)
        out = out.model_copy(update={"spec": type(job.spec).model_validate(raw)})
    return out


def wk(index: int, attempt: int = 0, state: State = State.RUNNING, job: str = "demo", **kw: Any) -> Worker:
    kw.setdefault("ready", state == State.RUNNING)
    kw.setdefault("created_at", T0)
    return Worker(name=f"{job}-{attempt}-{index}", index=index, attempt=attempt, state=state, **kw)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def job():
    return make_job


def report(step: int, when: datetime, attempt: int = 0, training: bool = True, **kw: Any) -> Report:
    """Rank 0's report as the job's Lease holds it."""
    return Report(attempt=attempt, time=when, step=step, training=training, **kw)


def lease(report: Report | None = None, launcher: LauncherStart | None = None) -> Child:
    return Child(LEASE, "demo-progress", exists=True, report=report, launcher=launcher)


@pytest.fixture
def first_write_at_once(monkeypatch):
    """A new job's first status is written in the reconcile that decided it (it may otherwise wait
    SETTLE_SECONDS for its pods to run: engine.writes), for tests about that write itself."""
    monkeypatch.setattr("trainyard.engine.writes.SETTLE_SECONDS", 0.0)
