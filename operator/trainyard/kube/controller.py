"""The kopf handlers: thin glue. A pod index keeps every worker pod grouped by job (server-side
label selector); every pod or job event wakes that job's loop (kube.loop), which observes,
decides and applies.

Jobs are watched with `on.event` rather than on.create/on.update: kopf then writes no
diff-base or progress annotations and no finalizer on the job, so the only writes the operator
makes are its children and one status patch per decision. Create, resume (operator restart),
update (scale, suspend) and delete all arrive as events and go through the same reconcile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import kopf

from .. import api
from ..api import admission
from ..api.names import DEFAULT_CLUSTER_DOMAIN, LABEL_JOB_NAME
from . import kopf_patches, kueue, metrics
from .client import KubeClient, load_config
from .leases import from_lease
from .loop import Loops
from .nodes import lean_node, node_state
from .pods import from_pod, lean_meta, lean_pod


def _lean(group: str, plural: str, obj: dict[str, Any]) -> None:
    """What the operator holds of each watched object (kopf_patches 3.)."""
    if group == "" and plural == "pods":
        lean_pod(obj)
    elif group == "" and plural == "nodes":
        lean_node(obj)
    else:
        lean_meta(obj)


kopf_patches.apply(lean=_lean)  # before kopf starts (O(objects^2) start-up, copies, whole bodies, JSON)

# Reconciles run in threads (the official client is synchronous); the default pool of
# min(32, cpus + 4) threads would queue the jobs of a burst behind a handful of them.
RECONCILE_THREADS = 32
LIST_PAGE = 500  # kubectl's default page


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, worker_pods: kopf.Index,
                    node_states: kopf.Index, workloads: kopf.Index, job_leases: kopf.Index, **_: Any) -> None:
    settings.persistence.finalizer = "trainyard.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="trainyard.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="trainyard.dev")
    settings.watching.label_selectors["pods"] = LABEL_JOB_NAME
    settings.watching.label_selectors["leases"] = LABEL_JOB_NAME
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    # Lists in pages: kopf holds a whole list's JSON and its parse at once otherwise. An operator
    # restart with 16,000 pods Running peaked at 1,123 MB; paged, with lean objects, 556 MB.
    settings.watching.chunk_size = LIST_PAGE
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=RECONCILE_THREADS, thread_name_prefix="trainyard-reconcile"))
    if "loops" not in memo:
        memo["loops"] = Loops(KubeClient(load_config(memo.get("kubeconfig"))),
                              cluster_domain=memo.get("cluster_domain") or DEFAULT_CLUSTER_DOMAIN)
    memo["loops"].index = worker_pods  # kopf fills these before any resource handler runs
    memo["loops"].node_index = node_states
    memo["loops"].lease_index = job_leases
    memo["loops"].workload_index = workloads
    loops = memo["loops"]
    loops.kueue = await asyncio.to_thread(loops.client.served, kueue.API_VERSION, kueue.PLURAL)
    logging.getLogger("trainyard.controller").info(
        "Kueue's Workload API is %s", "served: jobs with kueue.x-k8s.io/queue-name wait for admission" if loops.kueue
        else "not served: a job with kueue.x-k8s.io/queue-name waits (KueueUnavailable)")
    if memo.get("metrics_port"):
        metrics.serve(int(memo["metrics_port"]))
    # The engine re-checks every job against the CRD's rules: compile them before the first job.
    await asyncio.to_thread(admission.compile_rules)


@kopf.index("pods", labels={LABEL_JOB_NAME: kopf.PRESENT})
async def worker_pods(namespace: str, labels: dict, body: kopf.Body, **_: Any) -> dict:
    worker = from_pod(dict(body))
    if worker is None:
        return {}
    owner = next((o.get("uid") for o in body.metadata.get("ownerReferences") or [] if o.get("controller")), "")
    return {(namespace, labels[LABEL_JOB_NAME]): (owner, worker)}


# Event handlers are async on purpose: they only touch in-memory state and must run on the loop.
@kopf.on.event("pods", labels={LABEL_JOB_NAME: kopf.PRESENT})
async def pod_event(event: dict, namespace: str, labels: dict, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    loop = memo["loops"].get((namespace, labels[LABEL_JOB_NAME]))
    if loop is None:
        return
    worker = from_pod(dict(body))
    if event.get("type") == "DELETED" and worker is not None:
        loop.expectations.vanished(worker)  # the engine decides if that matters
    if event.get("type") != "DELETED" and worker is not None and worker.active and not worker.disruption:
        loop.nudge()  # progress (created, scheduled, started): coalesced with the gang's other pods
    else:
        loop.wake()  # a failure, a deletion, a pod that ended: at once


# Kueue's Workloads of queued jobs (kube.kueue): an admission or an eviction wakes the job. Kueue
# not installed: kopf leaves this resource unwatched (one warning at startup) and a queued job waits.
@kopf.index(kueue.GROUP, kueue.VERSION, kueue.PLURAL, labels={LABEL_JOB_NAME: kopf.PRESENT})
async def workloads(namespace: str, labels: dict, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_JOB_NAME]): kueue.workload_state(dict(body))}


@kopf.on.event(kueue.GROUP, kueue.VERSION, kueue.PLURAL, labels={LABEL_JOB_NAME: kopf.PRESENT})
async def workload_event(namespace: str, labels: dict, memo: kopf.Memo, **_: Any) -> None:
    loop = memo["loops"].get((namespace, labels[LABEL_JOB_NAME]))
    if loop is not None:
        loop.wake()


# The jobs' progress Leases (rank 0 renews its own with its progress; kube.leases): an index, read
# by each job's backend, and events that wake its loop when the progress matters (JobLoop.lease_changed).
@kopf.index("coordination.k8s.io", "v1", "leases", labels={LABEL_JOB_NAME: kopf.PRESENT})
async def job_leases(namespace: str, body: kopf.Body, **_: Any) -> dict:
    seen = from_lease(dict(body))
    if seen is None:
        return {}
    job, owner, state = seen
    return {(namespace, job): (owner, state)}


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={LABEL_JOB_NAME: kopf.PRESENT})
async def lease_event(event: dict, namespace: str, labels: dict, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    loop = memo["loops"].get((namespace, labels[LABEL_JOB_NAME]))
    seen = from_lease(dict(body)) if event.get("type") != "DELETED" else None
    if loop is not None and seen is not None:
        loop.lease_changed(seen[2])


@kopf.index("nodes")
async def node_states(name: str, body: kopf.Body, **_: Any) -> dict:
    return {name: node_state(dict(body))}


@kopf.on.event("nodes")
async def node_event(event: dict, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ready = None if event.get("type") == "DELETED" else node_state(dict(body)).ready
    memo["loops"].node_changed(name, ready)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def job_event(event: dict, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if event.get("type") == "DELETED":
        memo["loops"].stop(namespace, name)
    else:
        memo["loops"].wake(namespace, name, body)


@kopf.on.cleanup()
async def stop_loops(memo: kopf.Memo, **_: Any) -> None:
    if "loops" in memo:
        memo["loops"].stop_all()


@kopf.on.probe(id="jobs")
def probe_jobs(memo: kopf.Memo, **_: Any) -> int:
    return len(memo["loops"].loops) if "loops" in memo else 0
