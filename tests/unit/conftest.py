from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trainyard.api import DistributedTrainingJob
from trainyard.workers import State, Worker

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


def wk(index: int, attempt: int = 0, state: State = State.RUNNING, job: str = "demo", **kw: Any) -> Worker:
    kw.setdefault("ready", state == State.RUNNING)
    kw.setdefault("created_at", T0)
    return Worker(name=f"{job}-{attempt}-{index}", index=index, attempt=attempt, state=state, **kw)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def job():
    return make_job
