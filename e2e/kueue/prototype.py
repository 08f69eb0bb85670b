#!/usr/bin/env python3
"""Prototype of the two ways a Python operator can put DistributedTrainingJobs behind Kueue.

It plays the operator by hand (kubectl only, stdlib only) against a cluster made by
e2e/kueue/up.sh, and prints a timestamped log of what it did and what Kueue answered:

  setup     the DTJ CRD, 2 tainted kwok nodes (pool=trainyard-kueue), ResourceFlavor "pool"
            (nodeLabels + nodeTaints + tolerations), one ClusterQueue per route with 4 cpu / 8Gi,
            a LocalQueue "lq" in namespaces kq-a and kq-b
  route-a   the operator creates a Workload per DTJ (externalFrameworks), starts pods only after
            admission, with the flavour's nodeSelector/tolerations, keeps the Workload across a
            gang restart, marks it Finished; also: eviction (spec.active=false) handling
  route-b   Kueue's pod-group integration: the operator only labels its pods; gang restart with
            the same group name and with one group per attempt
  wfpr      route A with waitForPodsReady on: PodsReady reporting, a gang restart inside and one
            beyond recoveryTimeout (the kueue#14811 scenario)
  clean     delete the prototype's namespaces and cluster-scoped objects

  latency   admission latency and hand-over time (a Finished -> b Admitted), 8 rounds

Usage: KUBECONFIG=... prototype.py setup|route-a|route-b|wfpr|latency|clean
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

KUBECTL = os.environ.get("KUBECTL", os.path.expanduser("~/.cache/trainyard/bin/current/kubectl"))
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
T0 = time.monotonic()

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
GROUP_COUNT_ANN = "kueue.x-k8s.io/pod-group-total-count"
WORKERS = 4
POOL_LABEL = {"pool": "trainyard-kueue"}
TAINT = {"key": "trainyard.dev/pool", "value": "kueue", "effect": "NoSchedule"}
TOLERATION = {"key": "trainyard.dev/pool", "operator": "Equal", "value": "kueue", "effect": "NoSchedule"}


# ------------------------------------------------------------------------------------------------
# kubectl helpers
# ------------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:8.3f}s] {msg}", flush=True)


def k(*args: str, input: str | None = None, check: bool = True) -> str:
    p = subprocess.run([KUBECTL, "--request-timeout=30s", *args], input=input, text=True, capture_output=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def kj(*args: str) -> dict:
    return json.loads(k(*args, "-o", "json"))


def get(kind: str, name: str, ns: str | None = None) -> dict | None:
    args = ["get", kind, name, "--ignore-not-found", "-o", "json"]
    if ns:
        args += ["-n", ns]
    out = k(*args)
    return json.loads(out) if out.strip() else None


def apply(obj: dict | list, *extra: str) -> None:
    items = obj if isinstance(obj, list) else [obj]
    k("apply", "--server-side", "--force-conflicts", "--field-manager=trainyard-prototype", *extra,
      "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def create(obj: dict | list) -> None:
    items = obj if isinstance(obj, list) else [obj]
    k("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def wait_for(what: str, fn, timeout: float = 60, interval: float = 0.05):
    t = time.monotonic()
    while True:
        v = fn()
        if v:
            return v, time.monotonic() - t
        if time.monotonic() - t > timeout:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cond(obj: dict | None, type_: str) -> dict | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return None


def is_true(obj: dict | None, type_: str) -> bool:
    c = cond(obj, type_)
    return bool(c and c["status"] == "True")


def conds_str(obj: dict | None) -> str:
    cs = ((obj or {}).get("status") or {}).get("conditions") or []
    return ", ".join(f"{c['type']}={c['status']}({c.get('reason', '')})" for c in cs) or "-"


def cq_usage(name: str) -> str:
    cq = get("clusterqueue", name) or {}
    st = cq.get("status") or {}
    res = []
    for f in st.get("flavorsReservation") or []:
        res += [f"{r['name']}={r['total']}" for r in f.get("resources", [])]
    return (f"reserving={st.get('reservingWorkloads', 0)} admitted={st.get('admittedWorkloads', 0)} "
            f"pending={st.get('pendingWorkloads', 0)} reserved[{' '.join(res)}]")


def pods(ns: str, job: str) -> list[dict]:
    return kj("get", "pods", "-n", ns, "-l", f"trainyard.dev/job-name={job}")["items"]


def pods_str(ns: str, job: str) -> str:
    out = []
    for p in sorted(pods(ns, job), key=lambda p: p["metadata"]["name"]):
        gated = "gated" if p["spec"].get("schedulingGates") else ""
        dele = "deleting" if p["metadata"].get("deletionTimestamp") else ""
        node = p["spec"].get("nodeName") or "-"
        out.append(f"{p['metadata']['name']}:{p['status'].get('phase')}:{node}{':' + gated if gated else ''}"
                   f"{':' + dele if dele else ''}")
    return " ".join(out) or "(none)"


def events(ns: str, prefix: str) -> str:
    """Kueue's events on pods whose name starts with prefix, oldest first, counted by reason."""
    evs = kj("get", "events", "-n", ns, "--field-selector", "involvedObject.kind=Pod")["items"]
    seen: dict[tuple, list[str]] = {}
    for e in evs:
        n = e["involvedObject"]["name"]
        if n.startswith(prefix) and e.get("source", {}).get("component") != "default-scheduler" and e["reason"] != "Scheduled":
            seen.setdefault((e["type"], e["reason"], e["message"]), []).append(n)
    return "\n".join(f"      {t} {r}: {m}  [{' '.join(sorted(set(ns_)))}]" for (t, r, m), ns_ in seen.items()) or "      (none)"


# ------------------------------------------------------------------------------------------------
# objects
# ------------------------------------------------------------------------------------------------
def dtj(ns: str, name: str, queue: str | None) -> dict:
    labels = {QUEUE_LABEL: queue} if queue else {}
    return {
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "workers": WORKERS,
            "template": {"spec": {"containers": [{
                "name": "trainer", "image": "trainyard/trainer:0.1.0",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
            }]}},
        },
    }


def owner_ref(job: dict) -> dict:
    return {"apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
            "name": job["metadata"]["name"], "uid": job["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def worker_pod(job: dict, attempt: int, index: int, node_selector: dict | None = None,
               tolerations: list | None = None, labels: dict | None = None,
               annotations: dict | None = None) -> dict:
    """What builders.worker_pod makes (name <job>-<attempt>-<index>, labels, controller ownerRef)."""
    name = job["metadata"]["name"]
    spec = json.loads(json.dumps(job["spec"]["template"]["spec"]))
    spec.update({"hostname": f"{name}-{attempt}-{index}", "subdomain": name, "restartPolicy": "Never"})
    if node_selector:
        spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **node_selector}
    if tolerations:
        spec["tolerations"] = (spec.get("tolerations") or []) + tolerations
    meta = {
        "name": f"{name}-{attempt}-{index}", "namespace": job["metadata"]["namespace"],
        "labels": {"trainyard.dev/job-name": name, "app.kubernetes.io/managed-by": "trainyard",
                   "trainyard.dev/worker-index": str(index), "trainyard.dev/attempt": str(attempt),
                   **(labels or {})},
        "ownerReferences": [owner_ref(job)],
    }
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def kubelet_terminate(ns: str, names: list[str], phase: str = "Failed", code: int = 137) -> None:
    """Do what a kubelet does to a pod it killed or whose container exited: terminal phase +
    terminated container state. kwok has no stage for that, so patch the status subresource."""
    for n in names:
        patch = {"status": {"phase": phase, "conditions": [{"type": "Ready", "status": "False"}],
                            "containerStatuses": [{
                                "name": "trainer", "image": "trainyard/trainer:0.1.0", "imageID": "", "ready": False,
                                "restartCount": 0,
                                "state": {"terminated": {"exitCode": code,
                                                         "reason": "Completed" if code == 0 else "Error"}}}]}}
        k("patch", "pod", n, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(patch), check=False)


def ensure_ns(ns: str) -> None:
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})


# ------------------------------------------------------------------------------------------------
# setup
# ------------------------------------------------------------------------------------------------
def setup() -> None:
    k("apply", "--server-side", "--force-conflicts", "-f", os.path.join(REPO, "crds", "trainyard.dev_distributedtrainingjobs.yaml"))
    k("wait", "--for=condition=Established", "crd/distributedtrainingjobs.trainyard.dev", "--timeout=60s")
    nodes = []
    for i in range(2):
        nodes.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"kueue-pool-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {**POOL_LABEL, "type": "kwok", "kubernetes.io/hostname": f"kueue-pool-{i}"}},
            "spec": {"taints": [TAINT]},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
        })
    apply(nodes)
    apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "pool"},
           "spec": {"nodeLabels": POOL_LABEL, "nodeTaints": [TAINT], "tolerations": [TOLERATION]}})
    for route in ("a", "b"):
        apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": f"cq-{route}"},
               "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"kq-{route}"}},
                        "queueingStrategy": "BestEffortFIFO",
                        "preemption": {"withinClusterQueue": "LowerPriority"},
                        "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
                            "name": "pool", "resources": [{"name": "cpu", "nominalQuota": "4"},
                                                          {"name": "memory", "nominalQuota": "8Gi"}]}]}]}})
        ensure_ns(f"kq-{route}")
        apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
               "metadata": {"name": "lq", "namespace": f"kq-{route}"}, "spec": {"clusterQueue": f"cq-{route}"}})
    apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass", "metadata": {"name": "high"},
           "value": 1000, "description": "prototype: preempts default-priority workloads"})
    wait_for("ClusterQueues active", lambda: all(is_true(get("clusterqueue", f"cq-{r}"), "Active") for r in "ab"), 30)
    wait_for("tainted kwok nodes Ready", lambda: all(is_true(get("node", f"kueue-pool-{i}"), "Ready") for i in range(2)), 60)
    log("setup done: flavor 'pool' (nodeLabels pool=trainyard-kueue, taint trainyard.dev/pool=kueue:NoSchedule + toleration), "
        "cq-a/cq-b 4 cpu 8Gi, LocalQueue lq in kq-a and kq-b, nodes kueue-pool-0/1 (8 cpu each, tainted)")


def clean() -> None:
    for ns in ("kq-a", "kq-b", "kq-w"):
        k("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
    for cq in ("cq-a", "cq-b", "cq-w"):
        k("delete", "clusterqueue", cq, "--ignore-not-found", "--wait=false", check=False)


# ------------------------------------------------------------------------------------------------
# Route A: Workload objects made by the operator
# ------------------------------------------------------------------------------------------------
WL_FIELD_MANAGER = "trainyard-operator"


def workload_name(job: dict) -> str:
    # Deterministic: a restarted operator finds the same Workload; the uid part makes a
    # re-created job with the same name get a new one. (Kueue's own: <kind>-<name>-<hash5>.)
    return f"dtj-{job['metadata']['name']}-{job['metadata']['uid'][:8]}"


def make_workload(job: dict, priority_class: str | None = None) -> dict:
    tmpl = job["spec"]["template"]
    prio = {}
    if priority_class:
        # Kueue's job reconciler resolves the class to a value for its own integrations; an
        # external controller must do both: the reference and the number.
        wpc = get("workloadpriorityclass", priority_class)
        prio = {"priorityClassRef": {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass", "name": priority_class},
                "priority": wpc["value"]}
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
        "metadata": {
            "name": workload_name(job), "namespace": job["metadata"]["namespace"],
            "labels": {"kueue.x-k8s.io/job-uid": job["metadata"]["uid"], "trainyard.dev/job-name": job["metadata"]["name"]},
            "ownerReferences": [owner_ref(job)],
        },
        "spec": {
            "queueName": job["metadata"]["labels"][QUEUE_LABEL],
            **prio,
            "podSets": [{"name": "workers", "count": job["spec"]["workers"],
                         "template": {"metadata": {}, "spec": tmpl["spec"]}}],
        },
    }


def placement(wl: dict) -> tuple[dict, list]:
    """nodeSelector + tolerations for the admitted pod set: every ResourceFlavor named in
    status.admission.podSetAssignments[].flavors contributes spec.nodeLabels and spec.tolerations
    (what Kueue's podset.FromAssignment does), then admission checks' podSetUpdates are merged."""
    node_selector: dict = {}
    tolerations: list = []
    psa = wl["status"]["admission"]["podSetAssignments"][0]
    for flavor in sorted(set(psa.get("flavors", {}).values())):
        rf = get("resourceflavor", flavor)
        node_selector.update(rf["spec"].get("nodeLabels") or {})
        for t in rf["spec"].get("tolerations") or []:
            if t not in tolerations:
                tolerations.append(t)
    for ac in wl["status"].get("admissionChecks") or []:
        for u in ac.get("podSetUpdates") or []:
            if u["name"] == psa["name"]:
                node_selector.update(u.get("nodeSelector") or {})
                tolerations += [t for t in u.get("tolerations") or [] if t not in tolerations]
    return node_selector, tolerations


OWNED: dict[tuple[str, str], dict[str, dict]] = {}


def set_wl_condition(ns: str, name: str, type_: str, status: str, reason: str, message: str) -> None:
    """Server-side apply of the operator's conditions (PodsReady, Finished) on the status
    subresource. conditions is a listType=map keyed by type, so Kueue's conditions are never
    touched - but SSA deletes what this field manager applied before and omits now, so every
    apply carries ALL the conditions the operator owns, not just the one that changed."""
    owned = OWNED.setdefault((ns, name), {})
    prev = owned.get(type_)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ltt = prev["lastTransitionTime"] if prev and prev["status"] == status else now
    owned[type_] = {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": ltt, "observedGeneration": 1}
    apply({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
           "metadata": {"name": name, "namespace": ns},
           "status": {"conditions": list(owned.values())}},
          "--subresource=status", f"--field-manager={WL_FIELD_MANAGER}")


def clear_quota_reservation(ns: str, name: str, message: str) -> None:
    """What Kueue's job reconciler does for its own integrations once an evicted job has no
    active pods (jobframework reconciler step 6 + workload.UnsetQuotaReservationWithCondition):
    QuotaReserved=False/Pending, Admitted=False, status.admission removed. A JSON merge patch with
    the resourceVersion as precondition (conditions are sent whole: a merge patch replaces lists)."""
    for _ in range(10):
        wl = get("workload", name, ns)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conds = []
        for c in wl["status"].get("conditions") or []:
            c = dict(c)
            if c["type"] in ("QuotaReserved", "Admitted") and c["status"] == "True":
                c.update(status="False", reason="Pending" if c["type"] == "QuotaReserved" else "NoReservation",
                         message=message if c["type"] == "QuotaReserved" else "The workload has no reservation",
                         lastTransitionTime=now)
            conds.append(c)
        ev = cond(wl, "Evicted")
        if ev and ev["status"] == "True":
            # workload.SetRequeuedCondition as Kueue's job reconciler calls it: True for
            # Preempted/NodeFailures (requeue at once), False otherwise (e.g. PodsReadyTimeout:
            # Kueue flips it to True/BackoffFinished at requeueAt). Without a change of this
            # condition Kueue leaves the workload in its inadmissible list after the backoff
            # (seen: never re-admitted, with free quota).
            st = "True" if ev["reason"] in ("Preempted", "NodeFailures") else "False"
            old_rq = cond(wl, "Requeued")
            ltt = old_rq["lastTransitionTime"] if old_rq and old_rq["status"] == st else now
            conds = [c for c in conds if c["type"] != "Requeued"] + [
                {"type": "Requeued", "status": st, "reason": ev["reason"], "message": ev["message"],
                 "lastTransitionTime": ltt, "observedGeneration": wl["metadata"]["generation"]}]
        patch = {"metadata": {"resourceVersion": wl["metadata"]["resourceVersion"]},
                 "status": {"admission": None, "conditions": conds}}
        p = subprocess.run([KUBECTL, "patch", "workload", name, "-n", ns, "--subresource=status", "--type=merge",
                            f"--field-manager={WL_FIELD_MANAGER}", "-p", json.dumps(patch)], capture_output=True, text=True)
        if p.returncode == 0:
            return
        if "the object has been modified" not in p.stderr:
            raise RuntimeError(p.stderr)
    raise RuntimeError("could not clear the quota reservation (conflicts)")


def admitted(ns: str, name: str):
    wl = get("workload", name, ns)
    return wl if is_true(wl, "Admitted") and wl["status"].get("admission") else None


def start_gang(job: dict, attempt: int, wl: dict) -> list[str]:
    ns_sel, tols = placement(wl)
    create([worker_pod(job, attempt, i, ns_sel, tols) for i in range(job["spec"]["workers"])])
    return [f"{job['metadata']['name']}-{attempt}-{i}" for i in range(job["spec"]["workers"])]


def all_running(ns: str, job: str, attempt: int, n: int):
    ps = [p for p in pods(ns, job) if p["metadata"]["labels"].get("trainyard.dev/attempt") == str(attempt)
          and not p["metadata"].get("deletionTimestamp")]
    return len(ps) == n and all(p["status"].get("phase") == "Running" for p in ps)


def delete_pods(ns: str, names: list[str], wait: bool = False) -> None:
    k("delete", "pod", "-n", ns, *names, f"--wait={'true' if wait else 'false'}")


def route_a() -> None:
    ns, cq = "kq-a", "cq-a"
    create([dtj(ns, "a", "lq"), dtj(ns, "b", "lq")])
    job_a, job_b = get("dtj", "a", ns), get("dtj", "b", ns)
    log(f"DTJs a and b created with label {QUEUE_LABEL}=lq; the operator holds them (no pods) until admitted")

    t = time.monotonic()
    create(make_workload(job_a))
    wl_a, dt = wait_for("Workload a admitted", lambda: admitted(ns, workload_name(job_a)), 60)
    log(f"Workload {workload_name(job_a)} created -> Admitted after {dt * 1000:.0f} ms "
        f"(create call included: {(time.monotonic() - t) * 1000:.0f} ms)")
    log(f"  conditions: {conds_str(wl_a)}")
    log(f"  admission: {json.dumps(wl_a['status']['admission'])}")
    log(f"  finalizers: {wl_a['metadata'].get('finalizers')}  ownerReferences: {[o['kind'] + '/' + o['name'] for o in wl_a['metadata']['ownerReferences']]}")
    ns_sel, tols = placement(wl_a)
    log(f"  placement from ResourceFlavor: nodeSelector={ns_sel} tolerations={tols}")

    create(make_workload(job_b))
    time.sleep(2)
    wl_b = get("workload", workload_name(job_b), ns)
    log(f"Workload {workload_name(job_b)} created: {conds_str(wl_b)}")
    log(f"  QuotaReserved message: {cond(wl_b, 'QuotaReserved')['message'] if cond(wl_b, 'QuotaReserved') else '-'}")
    log(f"  {cq}: {cq_usage(cq)}")

    start_gang(job_a, 1, wl_a)
    _, dt = wait_for("a attempt 1 Running", lambda: all_running(ns, "a", 1, WORKERS), 60)
    log(f"a attempt 1: 4 pods Running {dt:.2f}s after create: {pods_str(ns, 'a')}")
    log(f"b pods: {pods_str(ns, 'b')}")

    # --- gang restart: delete every pod, create the next attempt at once (as the operator does)
    rv_before = get("workload", workload_name(job_a), ns)["status"]["admission"]
    log("GANG RESTART of a: delete a-1-*, create a-2-* immediately (old pods still terminating)")
    delete_pods(ns, [f"a-1-{i}" for i in range(WORKERS)])
    start_gang(job_a, 2, get("workload", workload_name(job_a), ns))
    _, dt = wait_for("a attempt 2 Running", lambda: all_running(ns, "a", 2, WORKERS), 60)
    log(f"a attempt 2: Running {dt:.2f}s after the restart: {pods_str(ns, 'a')}")
    for i in range(10):
        wl_a = get("workload", workload_name(job_a), ns)
        wl_b = get("workload", workload_name(job_b), ns)
        if i in (0, 9):
            log(f"  [{i * 2}s after] workload a: {conds_str(wl_a)}; admission unchanged: {wl_a['status'].get('admission') == rv_before}")
            log(f"  [{i * 2}s after] workload b: {conds_str(wl_b)}; {cq}: {cq_usage(cq)}")
        assert is_true(wl_a, "Admitted") and not is_true(wl_a, "Evicted"), "a lost its admission"
        assert not is_true(wl_b, "QuotaReserved"), "b got quota during a's restart"
        time.sleep(2)
    log(f"  20 s watched: a stayed Admitted, never Evicted; b never reserved quota; evictions on a: "
        f"{(wl_a['status'].get('schedulingStats') or {}).get('evictions')}")

    # --- a finishes: workers succeed, the operator marks the Workload Finished
    kubelet_terminate(ns, [f"a-2-{i}" for i in range(WORKERS)], "Succeeded", 0)
    t = time.monotonic()
    set_wl_condition(ns, workload_name(job_a), "Finished", "True", "Succeeded", "DistributedTrainingJob succeeded")
    wl_b, dt = wait_for("b admitted", lambda: admitted(ns, workload_name(job_b)), 60)
    log(f"a Finished (condition applied by the operator) -> b Admitted after {dt * 1000:.0f} ms")
    wl_a = get("workload", workload_name(job_a), ns)
    log(f"  workload a: {conds_str(wl_a)}; admission kept for the record: {bool(wl_a['status'].get('admission'))}")
    log(f"  {cq}: {cq_usage(cq)}")
    start_gang(job_b, 1, wl_b)
    _, dt = wait_for("b Running", lambda: all_running(ns, "b", 1, WORKERS), 60)
    log(f"b attempt 1 Running: {pods_str(ns, 'b')}")

    # --- eviction by preemption: a higher-priority Workload arrives while b runs. Kueue marks b
    #     Evicted (Preempted) but keeps its quota reserved until the job controller - here the
    #     operator - has stopped the pods and cleared the reservation.
    create(dtj(ns, "c", "lq"))
    job_c = get("dtj", "c", ns)
    create(make_workload(job_c, "high"))
    wl_b, dt = wait_for("b Evicted", lambda: (lambda w: w if is_true(w, "Evicted") else None)(get("workload", workload_name(job_b), ns)), 30)
    log(f"Workload c (WorkloadPriorityClass high, priority 1000) created -> b Evicted after {dt * 1000:.0f} ms: {conds_str(wl_b)}")
    time.sleep(3)
    wl_b = get("workload", workload_name(job_b), ns)
    log(f"  3 s later, operator has not reacted: b {conds_str(wl_b)}; admission present: {bool(wl_b['status'].get('admission'))}; "
        f"{cq}: {cq_usage(cq)}; c: {conds_str(get('workload', workload_name(job_c), ns))}; b pods: {pods_str(ns, 'b')}")
    log("  operator: Evicted=True -> delete b's pods, wait until none is active, then clear the quota reservation")
    delete_pods(ns, [f"b-1-{i}" for i in range(WORKERS)], wait=True)
    clear_quota_reservation(ns, workload_name(job_b), "Preempted: the job's pods were stopped")
    wl_c, dt = wait_for("c admitted", lambda: admitted(ns, workload_name(job_c)), 60)
    log(f"  quota reservation of b cleared -> c Admitted after {dt * 1000:.0f} ms")
    log(f"  b: {conds_str(get('workload', workload_name(job_b), ns))}; {cq}: {cq_usage(cq)}")
    t = time.monotonic()
    set_wl_condition(ns, workload_name(job_c), "Finished", "True", "Succeeded", "done")
    wl_b, dt = wait_for("b re-admitted", lambda: admitted(ns, workload_name(job_b)), 60)
    log(f"c Finished -> b (requeued) Admitted again after {dt * 1000:.0f} ms: {conds_str(wl_b)}")
    start_gang(job_b, 2, wl_b)
    wait_for("b Running", lambda: all_running(ns, "b", 2, WORKERS), 60)

    # --- user suspend (spec.runPolicy.suspend=true) maps to Workload spec.active=false: Kueue
    #     evicts (Deactivated) and drops the quota from its cache at once, without waiting.
    create(dtj(ns, "d", "lq"))
    job_d = get("dtj", "d", ns)
    create(make_workload(job_d))
    time.sleep(1)
    k("patch", "workload", workload_name(job_b), "-n", ns, "--type=merge", "-p", '{"spec":{"active":false}}')
    wl_d, dt = wait_for("d admitted", lambda: admitted(ns, workload_name(job_d)), 30)
    wl_b = get("workload", workload_name(job_b), ns)
    log(f"b spec.active=false -> d Admitted after {dt * 1000:.0f} ms although b's pods still run ({pods_str(ns, 'b')}): "
        f"b {conds_str(wl_b)}")
    delete_pods(ns, [f"b-2-{i}" for i in range(WORKERS)], wait=True)
    clear_quota_reservation(ns, workload_name(job_b), "Suspended: the job's pods were stopped")
    log(f"  operator deleted b's pods and cleared its reservation: b {conds_str(get('workload', workload_name(job_b), ns))}")
    set_wl_condition(ns, workload_name(job_d), "Finished", "True", "Succeeded", "done")
    k("patch", "workload", workload_name(job_b), "-n", ns, "--type=merge", "-p", '{"spec":{"active":true}}')
    wl_b, dt = wait_for("b re-admitted", lambda: admitted(ns, workload_name(job_b)), 60)
    log(f"d Finished, b resumed (spec.active=true) -> b Admitted after {dt * 1000:.0f} ms: {conds_str(wl_b)}")
    set_wl_condition(ns, workload_name(job_b), "Finished", "True", "Succeeded", "done")
    time.sleep(1)
    log(f"  end: {cq}: {cq_usage(cq)}")


# ------------------------------------------------------------------------------------------------
# Route B: Kueue's pod-group integration
# ------------------------------------------------------------------------------------------------
def group_pods(job: dict, attempt: int, group: str, unretriable: bool = False) -> list[dict]:
    ann = {GROUP_COUNT_ANN: str(WORKERS)}
    if unretriable:
        ann["kueue.x-k8s.io/retriable-in-group"] = "false"
    return [worker_pod(job, attempt, i, labels={QUEUE_LABEL: "lq", GROUP_LABEL: group},
                       annotations=ann) for i in range(WORKERS)]


def route_b_case(ns: str, cq: str, per_attempt_group: bool, unretriable: bool = False) -> None:
    tag = "group per attempt" if per_attempt_group else "same group name across attempts"
    if unretriable:
        tag += ", kueue.x-k8s.io/retriable-in-group=false"
    a_name, b_name = (("ua", "ub") if unretriable else ("pa", "pb")) if per_attempt_group else ("sa", "sb")
    log(f"=== route B, {tag}: DTJs {a_name}, {b_name} (no queue label on the DTJ: the pods are Kueue's jobs)")
    create([dtj(ns, a_name, None), dtj(ns, b_name, None)])
    job_a, job_b = get("dtj", a_name, ns), get("dtj", b_name, ns)
    grp = lambda job, att: f"{job['metadata']['name']}-{att}" if per_attempt_group else job["metadata"]["name"]

    t = time.monotonic()
    create(group_pods(job_a, 1, grp(job_a, 1), unretriable))
    _, dt = wait_for("a running", lambda: all_running(ns, a_name, 1, WORKERS), 60)
    p0 = pods(ns, a_name)[0]
    log(f"{a_name} attempt 1 pods created -> all Running after {dt * 1000:.0f} ms: {pods_str(ns, a_name)}")
    log(f"  pod {p0['metadata']['name']}: finalizers={p0['metadata'].get('finalizers')} nodeSelector={p0['spec'].get('nodeSelector')} "
        f"tolerations={[t.get('key') for t in p0['spec'].get('tolerations') or []]} managed={p0['metadata']['labels'].get('kueue.x-k8s.io/managed')}")
    wl_a = get("workload", grp(job_a, 1), ns)
    log(f"  workload {grp(job_a, 1)}: {conds_str(wl_a)}; owners={len(wl_a['metadata']['ownerReferences'])} pods")

    create(group_pods(job_b, 1, grp(job_b, 1), unretriable))
    time.sleep(2)
    log(f"{b_name} pods created: {pods_str(ns, b_name)}; workload: {conds_str(get('workload', grp(job_b, 1), ns))}")
    log(f"  {cq}: {cq_usage(cq)}")

    log(f"GANG RESTART of {a_name}: delete {a_name}-1-*, create {a_name}-2-* at once; the 'kubelet' "
        f"terminates the old pods 3 s later (phase Failed, exit 137)")
    old = [f"{a_name}-1-{i}" for i in range(WORKERS)]
    delete_pods(ns, old)
    create(group_pods(job_a, 2, grp(job_a, 2), unretriable))
    time.sleep(0.5)
    log(f"  +0.5s {a_name}: {pods_str(ns, a_name)}")
    time.sleep(2.5)
    log(f"  +3s   {a_name}: {pods_str(ns, a_name)}")
    kubelet_terminate(ns, old)
    samples = []
    watch = int(os.environ.get("PROTO_WATCH", "30")) // 2
    for i in range(watch):
        time.sleep(2)
        wa = get("workload", grp(job_a, 2), ns)
        wb = get("workload", grp(job_b, 1), ns)
        s = (f"  +{5 + i * 2}s {a_name}: {pods_str(ns, a_name)} | wl {grp(job_a, 2)}: {conds_str(wa) if wa else 'absent'} | "
             f"{b_name}: {conds_str(wb)} | {cq_usage(cq)}")
        if not samples or s.split('|', 1)[1] != samples[-1].split('|', 1)[1] or i == watch - 1:
            log(s)
        samples.append(s)
    log(f"  Kueue's events on {a_name}-2-* pods:\n{events(ns, a_name + '-2-')}")
    if per_attempt_group:
        log(f"  old workload {grp(job_a, 1)}: {conds_str(get('workload', grp(job_a, 1), ns)) if get('workload', grp(job_a, 1), ns) else 'absent (deleted)'}")
    else:
        # The operator saw its attempt-2 pods deleted by someone else: a disruption, so it makes
        # attempt 3 (now the old pods are terminal).
        log(f"operator: its {a_name}-2-* pods were deleted by Kueue -> a further restart, attempt 3")
        create(group_pods(job_a, 3, grp(job_a, 3), unretriable))
        try:
            _, dt = wait_for("attempt 3 running", lambda: all_running(ns, a_name, 3, WORKERS), 30)
            log(f"  attempt 3 Running after {dt:.1f}s: {pods_str(ns, a_name)}")
        except TimeoutError:
            log(f"  attempt 3 NOT running after 30 s: {pods_str(ns, a_name)}")
        wa = get("workload", grp(job_a, 3), ns)
        log(f"  wl {grp(job_a, 3)}: {conds_str(wa)} | {cq_usage(cq)}")
        log(f"  Kueue's events on {a_name}-3-* pods:\n{events(ns, a_name + '-3-')}")

    # finish whatever runs now, so the namespace's quota is released for the next case
    for job in (a_name, b_name):
        live = [p["metadata"]["name"] for p in pods(ns, job) if p["status"].get("phase") == "Running"
                and not p["spec"].get("schedulingGates")]
        kubelet_terminate(ns, live, "Succeeded", 0)
    time.sleep(3)
    log(f"  after finishing running pods: {pods_str(ns, a_name)} | {pods_str(ns, b_name)} | {cq_usage(cq)}")


def reset_b() -> None:
    # Workloads first: Kueue then drops its finalizers from the group's pods.
    k("delete", "workloads", "-n", "kq-b", "--all", "--wait=true", "--timeout=60s", check=False)
    k("delete", "pods", "-n", "kq-b", "--all", "--wait=true", "--timeout=60s", check=False)
    k("delete", "dtj", "-n", "kq-b", "--all", "--wait=true", "--timeout=60s", check=False)


def route_b() -> None:
    cases = sys.argv[2].split(",") if len(sys.argv) > 2 else ["same", "per-attempt", "unretriable"]
    for c in cases:
        reset_b()
        route_b_case("kq-b", "cq-b", per_attempt_group=(c != "same"), unretriable=(c == "unretriable"))
    reset_b()


# ------------------------------------------------------------------------------------------------
# Route A with waitForPodsReady (needs Kueue started with KUEUE_WAIT_FOR_PODS_READY)
# ------------------------------------------------------------------------------------------------
def wfpr() -> None:
    ns, cq = "kq-a", "cq-a"
    create(dtj(ns, "w", "lq"))
    job = get("dtj", "w", ns)
    name = workload_name(job)
    create(make_workload(job))
    wl, dt = wait_for("w admitted", lambda: admitted(ns, name), 60)
    log(f"w admitted after {dt * 1000:.0f} ms: {conds_str(wl)}")
    start_gang(job, 1, wl)
    wait_for("w running", lambda: all_running(ns, "w", 1, WORKERS), 60)
    set_wl_condition(ns, name, "PodsReady", "True", "PodsReady", "All pods reached readiness")
    log(f"w attempt 1 Running, operator set PodsReady=True: {conds_str(get('workload', name, ns))}")

    log("gang restart inside recoveryTimeout: PodsReady=False(WaitForRecovery), new pods, PodsReady=True after 3 s")
    delete_pods(ns, [f"w-1-{i}" for i in range(WORKERS)])
    set_wl_condition(ns, name, "PodsReady", "False", "WaitForRecovery", "gang restart in progress")
    start_gang(job, 2, get("workload", name, ns))
    wait_for("w running", lambda: all_running(ns, "w", 2, WORKERS), 60)
    time.sleep(3)
    set_wl_condition(ns, name, "PodsReady", "True", "Recovered", "All pods reached readiness")
    time.sleep(15)
    log(f"  15 s later: {conds_str(get('workload', name, ns))}; {cq_usage(cq)}")

    log("gang restart that outlives recoveryTimeout (new pods never get ready): expect eviction")
    delete_pods(ns, [f"w-2-{i}" for i in range(WORKERS)])
    set_wl_condition(ns, name, "PodsReady", "False", "WaitForRecovery", "gang restart in progress")
    t = time.monotonic()
    wl, dt = wait_for("w evicted", lambda: (lambda w: w if is_true(w, "Evicted") else None)(get("workload", name, ns)), 120, 0.5)
    log(f"  Evicted after {dt:.1f}s: {conds_str(wl)}")
    log(f"  schedulingStats: {wl['status'].get('schedulingStats')}; requeueState: {wl['status'].get('requeueState')}")
    time.sleep(3)
    wl = get("workload", name, ns)
    log(f"  3 s later, nothing done by the operator: QuotaReserved={cond(wl, 'QuotaReserved')['status']} admission present={bool(wl['status'].get('admission'))}; {cq_usage(cq)}")
    log("  operator: stop the pods (none here), clear the reservation, reset PodsReady to False/WaitForStart")
    clear_quota_reservation(ns, name, "Evicted: the job's pods were stopped")
    # Without this reset the stale PodsReady=False/WaitForRecovery (transition time: before the
    # eviction) makes Kueue evict the workload again the instant it is re-admitted (seen: a
    # second eviction 78 ms after re-admission). WaitForStart counts from the new admission.
    set_wl_condition(ns, name, "PodsReady", "False", "WaitForStart", "waiting for admission after eviction")
    time.sleep(1)
    wl = get("workload", name, ns)
    log(f"  after clearing: {conds_str(wl)}; {cq_usage(cq)}; requeueAt={((wl['status'].get('requeueState') or {}).get('requeueAt'))}")
    wl, dt = wait_for("w re-admitted", lambda: admitted(ns, name), 120, 0.2)
    log(f"  re-admitted after the backoff, {dt:.1f}s later: {conds_str(wl)}")
    start_gang(job, 3, wl)
    wait_for("w running", lambda: all_running(ns, "w", 3, WORKERS), 60)
    set_wl_condition(ns, name, "PodsReady", "True", "Started", "All pods reached readiness")
    log(f"  attempt 3 Running, PodsReady=True(Started); watching 25 s (> timeout 20 s)")
    time.sleep(25)
    wl = get("workload", name, ns)
    log(f"  {conds_str(wl)}; evictions={wl['status'].get('schedulingStats')}; {cq_usage(cq)}")
    kubelet_terminate(ns, [f"w-3-{i}" for i in range(WORKERS)], "Succeeded", 0)
    set_wl_condition(ns, name, "Finished", "True", "Succeeded", "done")
    time.sleep(1)
    log(f"  finished: {conds_str(get('workload', name, ns))}; end: {cq_usage(cq)}")


class Api:
    """Direct HTTPS client for the latency measurement (a kubectl call costs 60-600 ms of process
    start on this busy machine, which would swamp what is measured)."""

    def __init__(self) -> None:
        import base64, http.client, ssl, tempfile
        cfg = json.loads(k("config", "view", "--raw", "--minify", "-o", "json"))
        cl, us = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        self.host, self.port = cl["server"].removeprefix("https://").split(":")
        d = tempfile.mkdtemp()
        paths = {}
        for key, field in (("ca", cl["certificate-authority-data"]), ("crt", us["client-certificate-data"]),
                           ("key", us["client-key-data"])):
            paths[key] = os.path.join(d, key)
            with open(paths[key], "wb") as f:
                f.write(base64.b64decode(field))
        ctx = ssl.create_default_context(cafile=paths["ca"])
        ctx.load_cert_chain(paths["crt"], paths["key"])
        self.conn = http.client.HTTPSConnection(self.host, int(self.port), context=ctx)

    def req(self, method: str, path: str, body: dict | None = None, ctype: str = "application/json") -> dict:
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"Content-Type": ctype, "Accept": "application/json"})
        r = self.conn.getresponse()
        data = json.loads(r.read() or b"{}")
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data.get('message')}")
        return data


def latency(rounds: int = 8) -> None:
    """Admission latency of a Workload into free quota, and the hand-over time from a's Finished
    condition to b's admission (route A objects, no pods), measured with a direct API client
    polling every 10 ms."""
    ns = "kq-a"
    api = Api()
    base = f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{ns}/workloads"

    def wait_admitted(name: str) -> None:
        t = time.monotonic()
        while not is_true(api.req("GET", f"{base}/{name}"), "Admitted"):
            if time.monotonic() - t > 60:
                raise TimeoutError(name)
            time.sleep(0.01)

    def finish(name: str) -> None:
        api.req("PATCH", f"{base}/{name}/status?fieldManager={WL_FIELD_MANAGER}&force=true",
                {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload", "metadata": {"name": name, "namespace": ns},
                 "status": {"conditions": [{"type": "Finished", "status": "True", "reason": "Succeeded", "message": "done",
                                            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                            "observedGeneration": 1}]}}, "application/apply-patch+yaml")

    adm, hand = [], []
    tag = str(int(time.time()) % 100000)
    for r in range(rounds):
        a, b = f"la{tag}-{r}", f"lb{tag}-{r}"
        create([dtj(ns, a, "lq"), dtj(ns, b, "lq")])
        ja, jb = get("dtj", a, ns), get("dtj", b, ns)
        wa, wb = make_workload(ja), make_workload(jb)
        t = time.monotonic()
        api.req("POST", base, wa)
        wait_admitted(workload_name(ja))
        adm.append(time.monotonic() - t)
        api.req("POST", base, wb)
        time.sleep(1.5)
        assert not is_true(api.req("GET", f"{base}/{workload_name(jb)}"), "Admitted")
        t = time.monotonic()
        finish(workload_name(ja))
        wait_admitted(workload_name(jb))
        hand.append(time.monotonic() - t)
        finish(workload_name(jb))
        time.sleep(1)
    fmt = lambda xs: (f"min {min(xs) * 1000:.0f} / median {sorted(xs)[len(xs) // 2] * 1000:.0f} / "
                      f"max {max(xs) * 1000:.0f} ms  {[round(x * 1000) for x in xs]}")
    log(f"{rounds} rounds, direct API client, 10 ms polling; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    log(f"  Workload POST -> Admitted (free quota):         {fmt(adm)}")
    log(f"  a Finished applied -> b Admitted (hand-over):   {fmt(hand)}")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    {"setup": setup, "route-a": route_a, "route-b": route_b, "wfpr": wfpr, "latency": latency, "clean": clean}.get(
        cmd, lambda: sys.exit(__doc__))()
