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
  own `trainyard_api_requests_total` (its writes: create/patch/delete). Counted twice: to all
  Running, and to the end: after all Running the harness ends every pod with exit code 0 (a
  pods/status patch, as a kubelet reports it) and waits until every job is Succeeded. Both by verb
  and resource; the duplicate creates (POST pods answered 409) too. The events are in that figure
  and also shown alone; progress reporting's Lease, Role and RoleBinding (POST/PATCH) are counted
  apart, as the issue asks;
- an operator restart with every pod Running: the seconds until the new process tracks every job
  as Running again (its `trainyard_jobs` gauge), the writes that resync made (should be none) and
  its RSS (issue 16 asks this at 40,000 pods; this measures it at P2's size);
- the operator's CPU seconds and its reconcile latency histogram (trainyard_reconcile_latency_seconds:
  the event that woke a job's loop -> the end of that reconcile) over the burst;
- a probe job (8 workers, alone) before the burst, on the fresh operator, and again at the end, on
  the restarted operator that tracks every job of the burst (all Succeeded, their 4,000 pods kept):
  the seconds to its pods created and Running, and the worst bucket of its own reconciles' latency.
  A flat latency means the probe after is as quick as the probe before: the operator's reaction does
  not grow with the jobs it tracks. (Inside the burst a job's first reconcile waits for the burst
  itself: 500 jobs arrive at once and the floor, a bare client, needs seconds to create their pods.)
  The probe before is deleted, its pods gone, before the burst's write counts are taken.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import cluster as C
from .common import Result, column, interleave, log, paired_ratios, stats
from .session import BASELINE, NS_BASELINE, NS_FLOOR, NS_TRAINYARD, TRAINYARD, Session

JOBS = int(os.environ.get("BENCH_P2_JOBS", "500"))
# The 5,000 x 8 stretch asks for the operator's own figures (RSS, time to all Running, restart),
# not ratios: BENCH_P2_FLOOR=0 leaves the floor out, BENCH_P2_FINISH=0 the end-every-pod phase.
WITH_FLOOR = os.environ.get("BENCH_P2_FLOOR", "1") != "0"
FINISH = os.environ.get("BENCH_P2_FINISH", "1") != "0"
WORKERS = 8
OPERATOR_WRITES = {("pods", "", ""), ("services", "", ""), ("distributedtrainingjobs", "status", "trainyard.dev"),
                   ("events", "", "")}
# Progress reporting's own children (docs/progress.md), counted apart as issue 16 asks: the Lease
# (created by the operator and patched once with worker 0's IP; rank 0 patches it too, but kwok pods
# never report) and its Role and RoleBinding.
# PUT leases are the kubelets' (kwok's) and the leader elections', not the operator's.
PROGRESS_WRITES = {("POST", "leases", "coordination.k8s.io"), ("PATCH", "leases", "coordination.k8s.io"),
                   ("POST", "roles", "rbac.authorization.k8s.io"), ("POST", "rolebindings", "rbac.authorization.k8s.io")}


def writes(delta: dict[tuple, float]) -> dict[str, float]:
    """Write requests by 'VERB group/resource[/sub]' from an apiserver_request_total delta."""
    out: dict[str, float] = {}
    for (verb, group, resource, sub, _code), v in delta.items():
        if verb in C.WRITE_VERBS:
            key = f"{verb} {group + '/' if group else ''}{resource}{'/' + sub if sub else ''}"
            out[key] = out.get(key, 0.0) + v
    return dict(sorted(out.items()))


def operator_writes(delta: dict[tuple, float]) -> float:
    return sum(operator_writes_by(delta).values())


def operator_writes_by(delta: dict[tuple, float]) -> dict[str, float]:
    """The operator's writes (the resources it writes) by 'VERB resource[/sub]'."""
    out: dict[str, float] = {}
    for (verb, group, resource, sub, _c), v in delta.items():
        if verb in C.WRITE_VERBS and (resource, sub, group) in OPERATOR_WRITES:
            key = f"{verb} {resource}{'/' + sub if sub else ''}"
            out[key] = out.get(key, 0.0) + v
    return dict(sorted(out.items()))


def progress_writes(delta: dict[tuple, float]) -> float:
    return sum(v for (verb, group, resource, _s, _c), v in delta.items() if (verb, resource, group) in PROGRESS_WRITES)


def event_writes(delta: dict[tuple, float]) -> float:
    return sum(v for k, v in operator_writes_by(delta).items() if k.endswith(" events"))


def duplicate_creates(delta: dict[tuple, float]) -> float:
    """Pod creations the apiserver answered 409 AlreadyExists: the operator sent them twice."""
    return sum(v for (verb, group, resource, sub, code), v in delta.items()
               if verb == "POST" and resource == "pods" and not sub and not group and code == "409")


def histogram(text: str, name: str) -> dict[str, float]:
    """A Prometheus histogram's cumulative buckets {le: count}, plus sum and count."""
    out = {"le=" + k.split("le=")[1].strip('"'): v for k, v in C.prom_values(text, f"{name}_bucket").items()
           if "le=" in k}
    out["sum"] = C.prom_values(text, f"{name}_sum").get("", 0.0)
    out["count"] = C.prom_values(text, f"{name}_count").get("", 0.0)
    return out


def hist_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


PROBE = "probe"


def _not_probe(rec: Any) -> bool:
    return f"-{PROBE}-" not in rec.name


def _pods_of(name: str) -> Any:
    return lambda rec: rec.name.startswith(f"{name}-")


def _probe(session: Session, w: C.PodWatch, ns: str, op: Any, name: str, timeout: float) -> dict[str, Any]:
    """One job alone: seconds to its WORKERS pods created and Running, and its reconciles' latency."""
    lat_before = histogram(op.metrics(), "trainyard_reconcile_latency_seconds")
    t0 = time.monotonic()
    session.submit_trainyard(name, WORKERS, ns, int(timeout))
    created, running = w.wait(lambda w: w.all_times(_pods_of(name), WORKERS), 120, f"the probe {name}'s pods Running")
    C.wait_for(lambda: (session.kube.custom.get_namespaced_custom_object(
        *TRAINYARD[:1], "v1alpha1", ns, TRAINYARD[1], name).get("status") or {}).get("phase") == "Running",
        60, f"the probe {name} Running", interval=0.1)
    time.sleep(0.5)  # that reconcile observes its latency after its status write and its event
    lat = hist_delta(lat_before, histogram(op.metrics(), "trainyard_reconcile_latency_seconds"))
    return {"created_s": created - t0, "running_s": running - t0, "latency": lat,
            "latency_max_bucket": quantile(lat, 1.0)}


def _delete_probe(session: Session, w: C.PodWatch, ns: str, name: str) -> None:
    session.kube.custom.delete_namespaced_custom_object(*TRAINYARD[:1], "v1alpha1", ns, TRAINYARD[1], name)
    w.wait(lambda w: not [r for r in w.select(_pods_of(name)) if r.deleted is None], 120,
           f"the probe {name}'s pods deleted")
    w.reset()
    # The apiserver counts a request once it has answered it, after the watch event it caused: the
    # probe's last pod DELETEs (the collector's and kwok's) must not land in the burst's counts.
    def pod_deletes() -> float:
        return writes(C.request_counts(session.kube.apiserver_metrics())).get("DELETE pods", 0.0)
    last, deadline = pod_deletes(), time.monotonic() + 15.0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = pod_deletes()
        if now == last:
            return
        last = now


def _wait(w: C.PodWatch, n: int, t0: float, timeout: float, op: Any = None) -> tuple[float, float]:
    """Until the n pods are Running; with the operator `op`, a job that failed ends the wait at once
    (its pods are gone and will never all be Running)."""
    checked = [0.0]

    def done(w: C.PodWatch) -> Any:
        if op is not None and time.monotonic() - checked[0] >= 5.0:
            checked[0] = time.monotonic()
            try:
                text = op.metrics()
            except OSError:  # an operator busy with 40,000 pods may answer late: look again in 5 s
                return None
            failed = C.prom_values(text, "trainyard_jobs_failed_total")
            if failed:
                raise RuntimeError(f"jobs failed while P2 waited for {n} pods Running: {failed}")
        return w.all_times(_not_probe, n)

    created, running = w.wait(done, timeout, f"{n} pods Running in {w.ns}")
    return created - t0, running - t0


def _finish_all(session: Session, ns: str, jobs: int, timeout: float) -> float:
    """Every pod ends with exit code 0 (a status patch each, as a kubelet reports a container that
    exited 0; 64 threads); returns the seconds until every job is Succeeded."""
    pods = [p.metadata.name for p in session.kube.core.list_namespaced_pod(ns).items]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        list(pool.map(lambda n: session.kube.fail_pod(ns, n, "trainer", exit_code=0), pods))

    def succeeded() -> bool:
        items = session.kube.custom.list_namespaced_custom_object(*TRAINYARD[:1], "v1alpha1", ns, TRAINYARD[1])["items"]
        return sum((i.get("status") or {}).get("phase") == "Succeeded" for i in items) >= jobs

    C.wait_for(succeeded, timeout, f"{jobs} jobs Succeeded in {ns}", interval=1.0)
    return time.monotonic() - t0


def trainyard_trial(session: Session, jobs: int, timeout: float, baseline: bool = False) -> dict[str, float]:
    ns = NS_BASELINE if baseline else NS_TRAINYARD
    op = session.restart_trainyard(baseline)  # every trial from a fresh process: its own peak RSS, no leftovers
    time.sleep(2.0)  # let kopf finish its initial listing
    w = session.watch(ns)
    prefix = session.name("scale")
    n = jobs * WORKERS
    probe_before = _probe(session, w, ns, op, f"{prefix}-{PROBE}-before", timeout)
    _delete_probe(session, w, ns, f"{prefix}-{PROBE}-before")
    before = C.request_counts(session.kube.apiserver_metrics())
    op_text = op.metrics()
    op_before = C.prom_values(op_text, "trainyard_api_requests_total")
    lat_before = histogram(op_text, "trainyard_reconcile_latency_seconds")
    dur_before = histogram(op_text, "trainyard_reconcile_duration_seconds")
    cpu_before = op.cpu_s()
    peak = op.sample_rss()
    rss_start = op.rss()
    pool = ThreadPoolExecutor(max_workers=64)
    t0 = time.monotonic()
    # P2 measures throughput: the startup deadline (a fault detector, 600 s by default) must not fire
    # while kube-scheduler works through its queue, longer than that at 40,000 pods on 2 cores.
    futures = [pool.submit(session.submit_trainyard, f"{prefix}-{j}", WORKERS, ns, int(timeout))
               for j in range(jobs)]
    errors = [f.exception() for f in futures if f.exception() is not None]
    submitted = time.monotonic() - t0
    pool.shutdown()
    if errors:
        peak()
        raise RuntimeError(f"{len(errors)} job submissions failed: {errors[0]}")
    created, running = _wait(w, n, t0, timeout, op)
    time.sleep(2)
    rss_peak = peak()
    cpu_running = op.cpu_s() - cpu_before
    at_running = C.request_counts(session.kube.apiserver_metrics())
    op_text = op.metrics()
    lat = hist_delta(lat_before, histogram(op_text, "trainyard_reconcile_latency_seconds"))
    dur = hist_delta(dur_before, histogram(op_text, "trainyard_reconcile_duration_seconds"))
    op_mid = C.prom_values(op_text, "trainyard_api_requests_total")
    op, resync = _restart(session, jobs, baseline, timeout)
    finished = _finish_all(session, ns, jobs, timeout) if FINISH else None
    time.sleep(2)
    after = C.request_counts(session.kube.apiserver_metrics())
    op_after = C.prom_values(op.metrics(), "trainyard_api_requests_total")  # the restarted process's, from 0
    probe_after = _probe(session, w, ns, op, f"{prefix}-{PROBE}-after", timeout)
    to_running, delta = C.request_delta(before, at_running), C.request_delta(before, after)
    op_delta = {k: op_mid.get(k, 0) - op_before.get(k, 0) + op_after.get(k, 0) for k in {*op_mid, *op_after}}
    op_delta = {k: v for k, v in op_delta.items() if v}
    op_writes = sum(v for k, v in op_delta.items() if 'verb="get"' not in k and 'verb="list"' not in k)
    out = {
        "created_s": created, "running_s": running, "submit_s": submitted, "succeeded_after_s": finished,
        "rss_peak_mb": rss_peak / 1e6, "rss_start_mb": rss_start / 1e6,
        "operator_cpu_to_running_s": cpu_running, "operator_cpu_s": op.cpu_s() - cpu_before,
        "writes_per_job_running": operator_writes(to_running) / jobs,
        "writes_per_job": operator_writes(delta) / jobs,
        "event_writes_per_job": event_writes(delta) / jobs,
        "progress_writes_per_job": progress_writes(delta) / jobs,
        "duplicate_creates": duplicate_creates(delta),
        "operator_counted_writes_per_job": op_writes / jobs,
        "all_apiserver_writes_per_job": sum(writes(delta).values()) / jobs,
        "writes_by_resource_per_job_running": {k: v / jobs for k, v in operator_writes_by(to_running).items()},
        "writes_by_resource_per_job": {k: v / jobs for k, v in operator_writes_by(delta).items()},
        "writes": writes(delta),  # type: ignore[dict-item]
        "operator_requests": op_delta,  # type: ignore[dict-item]
        **resync,
        "reconcile_latency_to_running": lat,  # type: ignore[dict-item]
        "reconcile_duration_to_running": dur,  # type: ignore[dict-item]
        "probe_before_created_s": probe_before["created_s"], "probe_before_running_s": probe_before["running_s"],
        "probe_before_latency_max_s": probe_before["latency_max_bucket"],
        "probe_after_created_s": probe_after["created_s"], "probe_after_running_s": probe_after["running_s"],
        "probe_after_latency_max_s": probe_after["latency_max_bucket"],
        "probe_before_latency": probe_before["latency"], "probe_after_latency": probe_after["latency"],  # type: ignore[dict-item]
    }
    session.clean(ns, TRAINYARD)
    return out


def _restart(session: Session, jobs: int, baseline: bool, timeout: float) -> tuple[Any, dict[str, Any]]:
    """With every pod Running, the operator is restarted: the seconds until the new process has
    listed every job and pod and reconciled each job to Running again (its trainyard_jobs gauge),
    the API writes it made meanwhile (a level-based resync of an unchanged world should make none)
    and its RSS then."""
    before = C.request_counts(session.kube.apiserver_metrics())
    t0 = time.monotonic()
    op = session.restart_trainyard(baseline)

    def back() -> bool:
        try:
            return C.prom_values(op.metrics(), "trainyard_jobs").get('phase="Running"', 0) >= jobs
        except OSError:
            return False

    C.wait_for(back, timeout, f"the restarted operator to track {jobs} Running jobs", interval=0.2)
    took = time.monotonic() - t0
    time.sleep(2)
    delta = C.request_delta(before, C.request_counts(session.kube.apiserver_metrics()))
    stop = session.last_stop_s
    return op, {"resync_s": took, "resync_stop_s": stop, "resync_after_stop_s": took - stop,
                "resync_rss_mb": op.rss() / 1e6, "resync_writes": operator_writes(delta),
                "resync_writes_by_resource": operator_writes_by(delta)}


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


def quantile(hist: dict[str, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q of a (delta) histogram."""
    total = hist.get("count", 0.0)
    if not total:
        return None
    bounds = sorted((float(k[3:]), v) for k, v in hist.items() if k.startswith("le="))
    return next((b for b, v in bounds if v >= q * total), None)


def run(session: Session, rounds: int = 2, jobs: int = JOBS) -> Result:
    n = jobs * WORKERS
    timeout = max(300.0, n * 0.3)
    res = Result(
        "p2_scale", f"P2 scale: {jobs} jobs x {WORKERS} workers ({n} pods) at once (kwok)",
        workload=f"{jobs} jobs x {WORKERS} workers = {n} kwok pods submitted at once; {rounds} interleaved rounds, "
                 "no warm-up round (the operator is restarted before every trainyard trial)",
        method=__doc__ or "")
    contenders: dict[str, Any] = {"trainyard": lambda r: trainyard_trial(session, jobs, timeout)}
    if WITH_FLOOR:
        contenders["floor"] = lambda r: floor_trial(session, jobs, timeout)
    if BASELINE:
        contenders["trainyard-base"] = lambda r: trainyard_trial(session, jobs, timeout, baseline=True)
    log(f"P2 scale: {jobs}x{WORKERS}: {', '.join(contenders)} x {rounds} rounds")
    trials = interleave(contenders, rounds, warmup=0)
    res.trials = trials
    fl = trials.get("floor")
    for who in [c for c in ("trainyard", "trainyard-base") if c in trials]:
        ty = trials[who]
        if fl is not None:
            res.row(f"{n} pods created: {who} / floor", paired_ratios(column(ty, "created_s"), column(fl, "created_s")),
                    "<= 1.5x", a=stats(column(ty, "created_s")), b=stats(column(fl, "created_s")))
            res.row(f"{n} pods Running: {who} / floor", paired_ratios(column(ty, "running_s"), column(fl, "running_s")),
                    "<= 1.2x", a=stats(column(ty, "running_s")), b=stats(column(fl, "running_s")))
        else:
            res.row(f"{who}: {n} pods created (absolute; no floor run)", None, "", a=stats(column(ty, "created_s")))
            res.row(f"{who}: {n} pods Running (absolute; no floor run)", None, "", a=stats(column(ty, "running_s")))
        res.row(f"{who}: operator peak RSS (absolute)", None, "<= 250 MB", a=stats(column(ty, "rss_peak_mb")),
                unit="MB", note="a figure of its own, not a ratio")
        res.row(f"{who}: API writes per job, create to all Running (absolute; workers={WORKERS})", None, "",
                a=stats(column(ty, "writes_per_job_running")), unit="")
        res.row(f"{who}: API writes per job, create to Succeeded (absolute; workers={WORKERS})", None,
                f"<= {WORKERS + 2} (workers + 2)", a=stats(column(ty, "writes_per_job")), unit="",
                note="apiserver-counted; by verb and resource in the JSON")
        res.row(f"{who}: of which events (absolute)", None, "", a=stats(column(ty, "event_writes_per_job")), unit="")
        res.row(f"{who}: progress Lease, Role, RoleBinding writes per job (absolute; counted apart)", None, "",
                a=stats(column(ty, "progress_writes_per_job")), unit="")
        res.row(f"{who}: duplicate pod creates (409, absolute)", None, "0", a=stats(column(ty, "duplicate_creates")),
                unit="")
        res.row(f"{who}: operator CPU to all Running (absolute)", None, "", a=stats(column(ty, "operator_cpu_to_running_s")))
        res.row(f"{who}: operator restart with {n} pods Running -> every job tracked again (absolute)", None, "",
                a=stats(column(ty, "resync_s")))
        res.row(f"{who}: of which from the new process's start (absolute; the rest stops the old one)", None, "",
                a=stats(column(ty, "resync_after_stop_s")))
        res.row(f"{who}: API writes of that resync (absolute)", None, "0", a=stats(column(ty, "resync_writes")), unit="")
        res.row(f"{who}: operator RSS after the resync (absolute)", None, "<= 250 MB",
                a=stats(column(ty, "resync_rss_mb")), unit="MB")
        for q in (0.5, 0.99):
            vals = [quantile(t["reconcile_latency_to_running"], q) for t in ty
                    if "error" not in t and t.get("reconcile_latency_to_running", {}).get("count")]
            if vals:
                res.row(f"{who}: reconcile latency p{int(q * 100)} under the burst (bucket bound)", None, "",
                        a=stats(vals))
        res.row(f"{who}: probe job ({WORKERS} workers) created, after the burst / before it",
                paired_ratios(column(ty, "probe_after_created_s"), column(ty, "probe_before_created_s")),
                "(flat: ~1x)", a=stats(column(ty, "probe_after_created_s")),
                b=stats(column(ty, "probe_before_created_s")))
        res.row(f"{who}: probe job Running, after the burst / before it",
                paired_ratios(column(ty, "probe_after_running_s"), column(ty, "probe_before_running_s")),
                "(flat: ~1x)", a=stats(column(ty, "probe_after_running_s")),
                b=stats(column(ty, "probe_before_running_s")))
        res.row(f"{who}: probe's worst reconcile latency bucket, after the burst (absolute)", None, "",
                a=stats(column(ty, "probe_after_latency_max_s")), b=stats(column(ty, "probe_before_latency_max_s")),
                note="b: before the burst")
    if BASELINE:
        base, ty = trials["trainyard-base"], trials["trainyard"]
        for key, label in (("created_s", f"{n} pods created"), ("running_s", f"{n} pods Running")):
            res.row(f"{label}: trainyard / trainyard-base", paired_ratios(column(ty, key), column(base, key)),
                    "(after / before)", a=stats(column(ty, key)), b=stats(column(base, key)))
        res.extra["baseline"] = BASELINE
    keys = ("created_s", "running_s", "submit_s", "calls_s", "succeeded_after_s", "rss_peak_mb", "rss_start_mb",
            "writes_per_job", "writes_per_job_running", "event_writes_per_job", "progress_writes_per_job",
            "duplicate_creates", "operator_cpu_to_running_s",
            "operator_cpu_s", "operator_counted_writes_per_job", "all_apiserver_writes_per_job", "resync_s",
            "resync_stop_s", "resync_after_stop_s", "resync_writes", "resync_rss_mb", "probe_before_created_s",
            "probe_after_created_s", "probe_before_running_s", "probe_after_running_s")
    res.extra["absolute"] = {name: {k: stats(column(t, k)) for k in keys} for name, t in trials.items()}
    res.extra["jobs"], res.extra["workers"] = jobs, WORKERS
    return res
