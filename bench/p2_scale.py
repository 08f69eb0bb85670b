"""P2 scale: JOBS jobs x 8 workers submitted at once on kwok (default 500 x 8 = 4,000 pods; the
default `make bench` size is set by BENCH_P2_JOBS, see the README for the size of the recorded run).

Contenders, interleaved:
- trainyard: the harness creates the JOBS DistributedTrainingJobs at once (64 client threads); the
  Trainyard operator (a fresh process, restarted before the first trial) fans them out;
- floor: the bare-client process creates the same JOBS x 8 pods (the operator's own manifests,
  no owner), 64 threads, connection pool 64.

t0 is right before the first submission. "created" = the harness's pod watch has seen every pod,
"running" = it has seen every pod Running. Both include the kube-scheduler binding every pod
(client QPS 50 by default in kube-scheduler) and kwok marking it Running, for both contenders: at
50 bindings/s, 4,000 pods cannot all be Running in less than 80 s, so at full size the Running
figure of the floor is the scheduler's, and the ratio says how much the operator adds to it.

Also measured in the trainyard trials:
- peak RSS of the operator process (psutil, sampled every 0.2 s from t0 until all pods Running + 2 s;
  the operator is restarted before every trainyard trial, so each trial starts from a fresh process);
- API writes per job, from the kube-apiserver's own `apiserver_request_total` (scraped before and
  after with the admin kubeconfig): POST/PUT/PATCH/DELETE on the resources the operator writes -
  pods (create/delete), services, distributedtrainingjobs/status, core/v1 events - over JOBS.
  The harness's own job creations (POST distributedtrainingjobs) are left out; the scheduler
  (pods/binding, events.k8s.io), kwok (pods/status) and controller-manager (endpointslices,
  leases) write other resources and are reported separately. Cross-checked with the operator's
  own `trainyard_api_requests_total` (its writes: create/patch/delete).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import cluster as C
from .common import Result, column, interleave, log, paired_ratios, stats
from .session import NS_FLOOR, NS_TRAINYARD, TRAINYARD, Session

JOBS = int(os.environ.get("BENCH_P2_JOBS", "500"))
WORKERS = 8
OPERATOR_WRITES = {("pods", "", ""), ("services", "", ""), ("distributedtrainingjobs", "status", "trainyard.dev"),
                   ("events", "", "")}


def writes(delta: dict[tuple, float]) -> dict[str, float]:
    """Write requests by 'VERB group/resource[/sub]' from an apiserver_request_total delta."""
    out: dict[str, float] = {}
    for (verb, group, resource, sub, _code), v in delta.items():
        if verb in C.WRITE_VERBS:
            key = f"{verb} {group + '/' if group else ''}{resource}{'/' + sub if sub else ''}"
            out[key] = out.get(key, 0.0) + v
    return dict(sorted(out.items()))


def operator_writes(delta: dict[tuple, float]) -> float:
    return sum(v for (verb, group, resource, sub, _c), v in delta.items()
               if verb in C.WRITE_VERBS and (resource, sub, group) in OPERATOR_WRITES)


def _wait(w: C.PodWatch, n: int, t0: float, timeout: float) -> tuple[float, float]:
    created, running = w.wait(lambda w: w.all_times(lambda p: True, n), timeout, f"{n} pods Running in {w.ns}")
    return created - t0, running - t0


def trainyard_trial(session: Session, jobs: int, timeout: float) -> dict[str, float]:
    op = session.restart_trainyard()  # every trial from a fresh process: its own peak RSS, no leftovers
    time.sleep(2.0)  # let kopf finish its initial listing
    w = session.watch(NS_TRAINYARD)
    prefix = session.name("scale")
    n = jobs * WORKERS
    before = C.request_counts(session.kube.apiserver_metrics())
    op_before = C.prom_values(op.metrics(), "trainyard_api_requests_total")
    peak = op.sample_rss()
    rss_start = op.rss()
    pool = ThreadPoolExecutor(max_workers=64)
    t0 = time.monotonic()
    futures = [pool.submit(session.submit_trainyard, f"{prefix}-{j}", WORKERS) for j in range(jobs)]
    errors = [f.exception() for f in futures if f.exception() is not None]
    submitted = time.monotonic() - t0
    pool.shutdown()
    if errors:
        peak()
        raise RuntimeError(f"{len(errors)} job submissions failed: {errors[0]}")
    created, running = _wait(w, n, t0, timeout)
    time.sleep(2)
    rss_peak = peak()
    after = C.request_counts(session.kube.apiserver_metrics())
    op_after = C.prom_values(op.metrics(), "trainyard_api_requests_total")
    delta = C.request_delta(before, after)
    op_delta = {k: op_after.get(k, 0) - op_before.get(k, 0) for k in op_after if op_after.get(k, 0) != op_before.get(k, 0)}
    op_writes = sum(v for k, v in op_delta.items() if 'verb="get"' not in k and 'verb="list"' not in k)
    out = {
        "created_s": created, "running_s": running, "submit_s": submitted,
        "rss_peak_mb": rss_peak / 1e6, "rss_start_mb": rss_start / 1e6,
        "writes_per_job": operator_writes(delta) / jobs,
        "operator_counted_writes_per_job": op_writes / jobs,
        "all_apiserver_writes_per_job": sum(writes(delta).values()) / jobs,
        "writes": writes(delta),  # type: ignore[dict-item]
        "operator_requests": op_delta,  # type: ignore[dict-item]
    }
    session.clean(NS_TRAINYARD, TRAINYARD)
    return out


def floor_trial(session: Session, jobs: int, timeout: float) -> dict[str, float]:
    floor = session.floor(64)
    w = session.watch(NS_FLOOR)
    prefix = session.name("scale")
    n = jobs * WORKERS
    floor.prepare(NS_FLOOR, prefix, jobs, WORKERS)
    before = C.request_counts(session.kube.apiserver_metrics())
    t0 = time.monotonic()
    calls = floor.go()
    created, running = _wait(w, n, t0, timeout)
    after = C.request_counts(session.kube.apiserver_metrics())
    delta = C.request_delta(before, after)
    out = {"created_s": created, "running_s": running, "calls_s": calls,
           "all_apiserver_writes_per_job": sum(writes(delta).values()) / jobs,
           "writes": writes(delta)}  # type: ignore[dict-item]
    session.clean(NS_FLOOR)
    return out


def run(session: Session, rounds: int = 2, jobs: int = JOBS) -> Result:
    n = jobs * WORKERS
    timeout = max(300.0, n * 0.3)
    res = Result(
        "p2_scale", f"P2 scale: {jobs} jobs x {WORKERS} workers ({n} pods) at once (kwok)",
        workload=f"{jobs} jobs x {WORKERS} workers = {n} kwok pods submitted at once; {rounds} interleaved rounds, "
                 "no warm-up round (the operator is restarted before every trainyard trial)",
        method=__doc__ or "")
    contenders: dict[str, Any] = {"trainyard": lambda r: trainyard_trial(session, jobs, timeout),
                                  "floor": lambda r: floor_trial(session, jobs, timeout)}
    log(f"P2 scale: {jobs}x{WORKERS}: {', '.join(contenders)} x {rounds} rounds")
    trials = interleave(contenders, rounds, warmup=0)
    res.trials = trials
    ty, fl = trials["trainyard"], trials["floor"]
    res.row(f"{n} pods created: trainyard / floor", paired_ratios(column(ty, "created_s"), column(fl, "created_s")),
            "(no target)", a=stats(column(ty, "created_s")), b=stats(column(fl, "created_s")))
    res.row(f"{n} pods Running: trainyard / floor", paired_ratios(column(ty, "running_s"), column(fl, "running_s")),
            "<= 1.5x", a=stats(column(ty, "running_s")), b=stats(column(fl, "running_s")))
    rss = stats(column(ty, "rss_peak_mb"))
    res.row("operator peak RSS (absolute)", None, "<= 250 MB", a=rss, unit="MB",
            note="a figure of its own, not a ratio")
    wpj = stats(column(ty, "writes_per_job"))
    res.row(f"API writes per job, apiserver-counted (absolute; workers={WORKERS})", None,
            f"<= {WORKERS + 4}", a=wpj, unit="", note="cross-check: operator_counted_writes_per_job")
    res.extra["absolute"] = {name: {k: stats(column(t, k)) for k in (
        "created_s", "running_s", "submit_s", "calls_s", "rss_peak_mb", "rss_start_mb", "writes_per_job",
        "operator_counted_writes_per_job", "all_apiserver_writes_per_job")} for name, t in trials.items()}
    res.extra["jobs"], res.extra["workers"] = jobs, WORKERS
    return res
