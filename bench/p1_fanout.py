"""P1 fan-out: one 64-worker job, from its creation to all 64 pods existing and to all Running.

Contenders, interleaved round by round on the same kube-apiserver:
- trainyard: `kubectl create` of a DistributedTrainingJob (workers: 64) -> the Trainyard operator;
- floor: a bare client creating the same 64 pods (the operator's own manifests) with 64 threads of
  the official Python client, connection pool 64, in a process of its own; no job object, no
  Service, no status write: the least any controller can do for 64 pods;
- floor+svc: the same, with the job's headless Service created in the same burst (what the Service
  costs, apart from the operator);
- kubeflow: the equivalent PyTorchJob v1 (Master 1 + Worker 63) -> Kubeflow's training-operator
  v1.9.3, flags as its Deployment runs it (client QPS 20 / burst 30, 1 controller thread);
- kubeflow-qps: the same with --kube-api-qps 1000 --kube-api-burst 2000 (its client-side rate
  limit lifted), to show how much of its time is that limit.

t0 is taken right before the create call (for the floor: right before "go"); "created" is when the
harness's pod watch received the 64th pod's first event, "running" when it received the 64th
phase=Running (kwok marks a scheduled pod Running on its own). Pods are kwok's: nothing runs.
"""

from __future__ import annotations

import time
from typing import Any

from .cluster import job_of
from .common import Result, column, interleave, log, paired_ratios, stats
from .session import (
    BASELINE,
    KUBEFLOW,
    NS_BASELINE,
    NS_FLOOR,
    NS_KUBEFLOW,
    NS_KUBEFLOW_QPS,
    NS_TRAINYARD,
    TRAINYARD,
    Session,
)

WORKERS = 64


def _wait_all(session: Session, ns: str, name: str, n: int, t0: float, timeout: float = 300) -> dict[str, float]:
    w = session.watch(ns)
    created, running = w.wait(lambda w: w.all_times(lambda p: job_of(p) == name, n), timeout,
                              f"{n} pods of {ns}/{name} Running")
    return {"created_s": created - t0, "running_s": running - t0}


def trainyard_trial(session: Session, workers: int = WORKERS, baseline: bool = False) -> dict[str, float]:
    ns = NS_BASELINE if baseline else NS_TRAINYARD
    session.trainyard(baseline)
    session.watch(ns)
    name = session.name("fan")
    t0 = time.monotonic()
    session.submit_trainyard(name, workers, ns)
    out = _wait_all(session, ns, name, workers, t0)
    session.clean(ns, TRAINYARD)
    return out


def kubeflow_trial(session: Session, qps: bool = False, workers: int = WORKERS) -> dict[str, float]:
    ns = NS_KUBEFLOW_QPS if qps else NS_KUBEFLOW
    session.kubeflow(qps)
    session.watch(ns)
    name = session.name("fan")
    t0 = time.monotonic()
    session.submit_kubeflow(name, workers, ns)
    out = _wait_all(session, ns, name, workers, t0)
    session.clean(ns, KUBEFLOW)
    return out


def floor_trial(session: Session, workers: int = WORKERS, service: bool = False) -> dict[str, float]:
    floor = session.floor(64)
    session.watch(NS_FLOOR)
    name = session.name("fan")
    floor.prepare(NS_FLOOR, name, 1, workers, service)
    t0 = time.monotonic()
    calls = floor.go()
    out = _wait_all(session, NS_FLOOR, name, workers, t0)
    out["calls_s"] = calls
    session.clean(NS_FLOOR)
    return out


def run(session: Session, rounds: int = 8) -> Result:
    res = Result(
        "p1_fanout", "P1 fan-out: 64-worker job -> 64 pods created / Running (kwok)",
        workload=f"one job of {WORKERS} workers (no checkpoint claim), kwok pods; {rounds} interleaved rounds "
                 "after 1 warm-up round",
        method=__doc__ or "")
    contenders: dict[str, Any] = {
        "trainyard": lambda r: trainyard_trial(session),
        "floor": lambda r: floor_trial(session),
        "floor+svc": lambda r: floor_trial(session, service=True),
    }
    if BASELINE:
        contenders["trainyard-base"] = lambda r: trainyard_trial(session, baseline=True)
    if session.kubeflow_bin:
        contenders["kubeflow"] = lambda r: kubeflow_trial(session)
        contenders["kubeflow-qps"] = lambda r: kubeflow_trial(session, qps=True)
    else:
        res.notes.append(f"Kubeflow training-operator unavailable: {session.kubeflow_error}")
    log(f"P1 fan-out: {', '.join(contenders)} x {rounds} rounds")
    trials = interleave(contenders, rounds)
    res.trials = trials
    ty = trials["trainyard"]
    for key, label, target in (("created_s", "all 64 created", "<= 1.15x"), ("running_s", "all 64 Running", "<= 1.2x")):
        res.row(f"{label}: trainyard / floor", paired_ratios(column(ty, key), column(trials["floor"], key)),
                target, a=stats(column(ty, key)), b=stats(column(trials["floor"], key)))  # issue 16's targets
    fs = trials["floor+svc"]
    for key, label in (("created_s", "all 64 created"), ("running_s", "all 64 Running")):
        res.row(f"{label}: floor+svc / floor", paired_ratios(column(fs, key), column(trials["floor"], key)),
                "(what the Service costs)", a=stats(column(fs, key)), b=stats(column(trials["floor"], key)))
    if "trainyard-base" in trials:
        base = trials["trainyard-base"]
        for key, label in (("created_s", "all 64 created"), ("running_s", "all 64 Running")):
            res.row(f"{label}: trainyard-base / floor", paired_ratios(column(base, key), column(trials["floor"], key)),
                    "(before)", a=stats(column(base, key)), b=stats(column(trials["floor"], key)))
            res.row(f"{label}: trainyard / trainyard-base", paired_ratios(column(ty, key), column(base, key)),
                    "(after / before)", a=stats(column(ty, key)), b=stats(column(base, key)))
        res.extra["baseline"] = BASELINE
    if "kubeflow" in trials:
        for key, label in (("created_s", "all 64 created"), ("running_s", "all 64 Running")):
            res.row(f"{label}: kubeflow / trainyard",
                    paired_ratios(column(trials["kubeflow"], key), column(ty, key)), ">= 3x",
                    a=stats(column(trials["kubeflow"], key)), b=stats(column(ty, key)))
        for key, label in (("created_s", "all 64 created"),):
            res.row(f"{label}: kubeflow-qps / trainyard",
                    paired_ratios(column(trials["kubeflow-qps"], key), column(ty, key)), "(no target)",
                    a=stats(column(trials["kubeflow-qps"], key)), b=stats(column(ty, key)))
    res.extra["absolute"] = {name: {k: stats(column(t, k)) for k in ("created_s", "running_s")}
                             for name, t in trials.items()}
    return res
