"""P3 recovery: a 64-worker job, all Running; one worker pod turns Failed (a status patch, as a
kubelet reports a crashed container: phase Failed, exit code 1); how long until the replacement
exists and is Running.

- trainyard (restartPolicy OnFailure, restartScope Gang, the defaults): the replacement is the
  whole new gang, attempt 1: 64 new pods `<job>-1-<i>` (the old gang's 63 live pods are deleted,
  the failed one is kept for its logs). Measured: t0 = right before the status patch; "replacement
  created" = the 64th attempt-1 pod's first watch event; "replacement Running" = the 64th
  attempt-1 pod seen Running.
- kubeflow (PyTorchJob v1, restartPolicy OnFailure on Master and Worker): its controller deletes a
  Failed pod and creates it again under the same name; only that one pod is replaced, the other 63
  keep running. Measured: t0 = right before the status patch of `<job>-worker-5`; "replacement
  created" = the first watch event of a pod named `<job>-worker-5` with a new uid; "replacement
  Running" = that pod seen Running. (In a real cluster a crashing container under OnFailure is
  restarted in place by the kubelet, without the controller; kwok has no kubelet to do that, and
  a pod that does turn Failed - evicted, node lost, restart limit - takes exactly this path.)

Before the failure each job is let settle (the harness waits until its operator has written the
Running status and created all its Services - Trainyard 1, Kubeflow 64 - then 1 s more), so that
neither operator is still busy with the job's creation when the failure arrives.

So the two figures are not the same amount of work: Trainyard replaces 64 pods (a new
rendezvous for every worker, which torchrun needs anyway after a member fails), Kubeflow 1. Both
are reported as measured; the ratio says how long a user waits for a restarted gang/replica.
"""

from __future__ import annotations

import time
from typing import Any

from .cluster import job_of, prom_values, wait_for
from .common import Result, column, interleave, log, paired_ratios, stats
from .session import KUBEFLOW, NS_KUBEFLOW, NS_TRAINYARD, TRAINYARD, Session

WORKERS = 64
VICTIM = 5


def _recovery_metric(text: str) -> tuple[float, float]:
    s = prom_values(text, "trainyard_recovery_seconds_sum").get("", 0.0)
    c = prom_values(text, "trainyard_recovery_seconds_count").get("", 0.0)
    return s, c


def settle(session: Session, ns: str, services: int, status_ok) -> None:
    """Before the failure, the job must be at rest: its operator has written the Running status and
    created every Service (Kubeflow creates one per replica after the pods, at its client's 20 QPS: a
    failure injected while it is still creating them waits behind that work), then 1 s more."""
    wait_for(lambda: len(session.kube.core.list_namespaced_service(ns).items) >= services and status_ok(), 120,
             f"the job in {ns} to settle", interval=0.1)
    time.sleep(1.0)


def trainyard_trial(session: Session) -> dict[str, float]:
    op = session.trainyard()
    w = session.watch(NS_TRAINYARD)
    name = session.name("rec")
    session.submit_trainyard(name, WORKERS)
    w.wait(lambda w: w.all_times(lambda p: job_of(p) == name, WORKERS), 300, f"{name}: {WORKERS} Running")
    settle(session, NS_TRAINYARD, 1, lambda: (session.kube.custom.get_namespaced_custom_object(
        TRAINYARD[0], "v1alpha1", NS_TRAINYARD, TRAINYARD[1], name).get("status") or {}).get("phase") == "Running")
    before = _recovery_metric(op.metrics())
    t0 = time.monotonic()
    session.kube.fail_pod(NS_TRAINYARD, f"{name}-0-{VICTIM}", "trainer")
    created, running = w.wait(
        lambda w: w.all_times(lambda p: job_of(p) == name and p.labels.get("trainyard.dev/attempt") == "1", WORKERS),
        300, f"{name}: the attempt-1 gang Running")
    after = _recovery_metric(op.metrics())
    out = {"created_s": created - t0, "running_s": running - t0}
    if after[1] > before[1]:
        out["operator_recovery_s"] = (after[0] - before[0]) / (after[1] - before[1])
    session.clean(NS_TRAINYARD, TRAINYARD)
    return out


def kubeflow_trial(session: Session) -> dict[str, float]:
    session.kubeflow()
    w = session.watch(NS_KUBEFLOW)
    name = session.name("rec")
    session.submit_kubeflow(name, WORKERS, NS_KUBEFLOW)
    w.wait(lambda w: w.all_times(lambda p: job_of(p) == name, WORKERS), 300, f"{name}: {WORKERS} Running")
    settle(session, NS_KUBEFLOW, WORKERS, lambda: any(
        c.get("type") == "Running" and c.get("status") == "True" for c in (session.kube.custom.get_namespaced_custom_object(
            KUBEFLOW[0], "v1", NS_KUBEFLOW, KUBEFLOW[1], name).get("status") or {}).get("conditions") or []))
    victim = f"{name}-worker-{VICTIM}"
    old = {r.uid for r in w.select(lambda p: p.name == victim)}
    t0 = time.monotonic()
    session.kube.fail_pod(NS_KUBEFLOW, victim, "pytorch")

    def replaced(w: Any) -> tuple[float, float] | None:
        new = [r for r in w.pods.values() if r.name == victim and r.uid not in old]
        return (new[0].seen, new[0].running) if new and new[0].running is not None else None

    created, running = w.wait(replaced, 300, f"{victim} replaced and Running")
    deleted = [r.deleted for r in w.select(lambda p: p.uid in old) if r.deleted]
    out = {"created_s": created - t0, "running_s": running - t0}
    if deleted:
        out["old_pod_gone_s"] = deleted[0] - t0
    session.clean(NS_KUBEFLOW, KUBEFLOW)
    return out


def run(session: Session, rounds: int = 5) -> Result:
    res = Result(
        "p3_recovery", "P3 recovery: one of 64 workers Failed -> replacement created / Running (kwok)",
        workload=f"one job of {WORKERS} workers, all Running; worker {VICTIM} patched to Failed (exit 1); "
                 f"{rounds} interleaved rounds after 1 warm-up round, a fresh job per trial",
        method=__doc__ or "")
    contenders: dict[str, Any] = {"trainyard": lambda r: trainyard_trial(session)}
    if session.kubeflow_bin:
        contenders["kubeflow"] = lambda r: kubeflow_trial(session)
    else:
        res.notes.append(f"Kubeflow training-operator unavailable: {session.kubeflow_error}")
    log(f"P3 recovery: {', '.join(contenders)} x {rounds} rounds")
    trials = interleave(contenders, rounds)
    res.trials = trials
    ty = trials["trainyard"]
    res.extra["absolute"] = {n: {k: stats(column(t, k)) for k in ("created_s", "running_s", "operator_recovery_s",
                                                                  "old_pod_gone_s")} for n, t in trials.items()}
    if "kubeflow" in trials:
        kf = trials["kubeflow"]
        res.row("replacement created (kubeflow: the 1 pod; trainyard: the 64-pod gang): kubeflow / trainyard",
                paired_ratios(column(kf, "created_s"), column(ty, "created_s")), "(no target)",
                a=stats(column(kf, "created_s")), b=stats(column(ty, "created_s")))
        res.row("replacement Running: kubeflow / trainyard",
                paired_ratios(column(kf, "running_s"), column(ty, "running_s")), "(no target)",
                a=stats(column(kf, "running_s")), b=stats(column(ty, "running_s")))
    else:
        res.row("trainyard: failure -> 64-pod gang created (absolute)", None, a=stats(column(ty, "created_s")))
    res.notes.append("trainyard replaces the whole 64-pod gang (new rendezvous); kubeflow deletes and "
                     "recreates only the failed pod (same name) - see the method.")
    return res
