"""The kopf glue: gather what is observed, call the engine, apply the plan.

Event-driven and level-based:
- a kopf index keeps every worker pod (server-side label selector), grouped by job;
- every pod or job event wakes that job's reconcile loop at once (an asyncio.Event per job),
  so a pod failure is acted on within milliseconds, and bursts of events coalesce;
- each loop also wakes when the plan asks (backoff, deadlines, TTL) and on a slow resync.

Jobs are watched with `on.event` rather than on.create/on.update: kopf then writes no
diff-base or progress annotations and no finalizer on the job, so the only writes the operator
makes are its children and one status patch per decision. Create, resume (operator restart),
update (scale, suspend) and delete all arrive as events and go through the same reconcile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from . import api, metrics
from . import reasons as R
from .engine import Event, Plan, decide, set_condition
from .kube import Conflict, KubeBackend, api_message, load_config
from .naming import LABEL_JOB_NAME
from .workers import State, Worker, from_pod

log = logging.getLogger("trainyard.controller")

RESYNC_SECONDS = 300.0
# How long our own creations may lag behind the watch. The bench saw a 500-job burst lag past 60 s
# and re-send 129 creates (409s, wasted writes); a created pod always reaches the index (ADDED comes
# before any DELETED on the watch), so waiting longer costs nothing.
EXPECTATION_TTL = 300.0
DELETION_TTL = 900.0  # pods we deleted may take their grace period (and more) to disappear


@dataclass
class JobLoop:
    """In-memory state of one job's reconcile loop. Losing it (operator restart) is safe: it only
    hides the watch's lag behind our own writes and remembers pods that vanished."""

    namespace: str
    name: str
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    requeue: float | None = None
    tombstones: dict[str, Worker] = field(default_factory=dict)
    created: dict[str, tuple[Worker, float]] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    woken_at: float = 0.0  # when the event that triggered the next reconcile arrived
    failure_seen_at: float | None = None  # a restart is decided; its new workers are not created yet
    phase: str | None = None
    log: logging.LoggerAdapter = field(init=False)

    def __post_init__(self) -> None:
        # kopf's formatters put k8s_ref into every line: a prefix, or the "object" field in JSON logs.
        ref = {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": self.name, "namespace": self.namespace}
        self.log = logging.LoggerAdapter(log, {"k8s_ref": ref, "k8s_skip": True})

    def wake(self) -> None:
        if not self.wakeup.is_set():
            self.woken_at = time.monotonic()
            self.wakeup.set()

    def observe(self, indexed: list[tuple[str, Worker]], uid: str) -> list[Worker]:
        now = time.monotonic()
        seen = {w.name: w for owner, w in indexed if owner == uid}
        self.created = {n: v for n, v in self.created.items() if n not in seen and now - v[1] < EXPECTATION_TTL}
        self.deleted = {n: t for n, t in self.deleted.items() if now - t < DELETION_TTL}
        workers = list(seen.values())
        workers += [w for n, (w, _) in self.created.items()]
        workers += [w for n, w in self.tombstones.items() if n not in seen and n not in self.created]
        return workers


@dataclass
class Registry:
    backend: KubeBackend
    loops: dict[tuple[str, str], JobLoop] = field(default_factory=dict)
    index: Any = None  # the kopf index of pods by job, captured from the first handler call


def invalid_spec_status(obj: dict[str, Any], error: ValidationError, now: datetime) -> dict[str, Any] | None:
    """A Failed status for an object pydantic rejects, or None if it already says so."""
    status = api.DistributedTrainingJobStatus.model_validate(obj.get("status") or {})
    if status.phase == api.Phase.FAILED:
        return None
    problems = "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] and e["loc"][0] != "spec"
        else f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        for e in error.errors()
    )
    status.phase = api.Phase.FAILED
    status.completion_time = now
    status.message = f"invalid spec: {problems}"
    set_condition(status, R.FAILED, True, R.INVALID_SPEC, status.message, now)
    return status_body(status)


def status_body(status: api.DistributedTrainingJobStatus) -> dict[str, Any]:
    # Nulls stay in: in a merge patch they clear fields the new status no longer has.
    return status.model_dump(by_alias=True, mode="json")


def reconcile(backend: KubeBackend, loop: JobLoop, indexed: list[tuple[str, Worker]]) -> float | None:
    """One reconcile of one job. Returns when to look again (seconds), or None."""
    for _ in range(5):
        obj = backend.get_job(loop.namespace, loop.name)
        if obj is None:
            return None
        now = datetime.now(UTC)
        try:
            job = api.DistributedTrainingJob.from_dict(obj)
        except ValidationError as e:
            body = invalid_spec_status(obj, e, now)
            if body is not None:
                backend.patch_status(loop.namespace, loop.name, obj["metadata"]["resourceVersion"], body)
                backend.post_events(obj, [Event("Warning", R.INVALID_SPEC, body["message"])])
            return None
        workers = loop.observe(indexed, job.metadata.uid)
        # Pods we already asked to delete are gone as far as decisions go.
        workers = [w for w in workers if w.name not in loop.deleted or not w.active]
        plan = decide(job, workers, now)
        try:
            retry_soon = apply(backend, loop, obj, job, plan)
        except Conflict:
            loop.log.debug("conflict writing the status; deciding again")
            continue
        record(loop, job, plan)
        if plan.status.rendezvous_attempt:
            loop.tombstones = {n: w for n, w in loop.tombstones.items()
                               if w.attempt >= plan.status.rendezvous_attempt}
        if retry_soon:
            return min(plan.requeue_after or 1.0, 1.0)
        return plan.requeue_after
    return 1.0


def record(loop: JobLoop, job: api.DistributedTrainingJob, plan: Plan) -> None:
    """Metrics for what this reconcile decided and did (it has already been applied)."""
    ns, old, new = loop.namespace, job.status, plan.status
    reasons = {e.reason for e in plan.events}
    now = datetime.now(UTC)
    age = (now - job.metadata.creationTimestamp).total_seconds() if job.metadata.creationTimestamp else None
    if R.WORKERS_CREATED in reasons and old.condition(R.CREATED) is None:
        metrics.JOBS_CREATED.labels(ns).inc()
        if age is not None:
            metrics.WORKERS_CREATED_SECONDS.observe(age)
    if R.ALL_WORKERS_RUNNING in reasons and new.attempt == 0 and age is not None:
        metrics.WORKERS_RUNNING_SECONDS.observe(age)
    if new.phase == api.Phase.RESTARTING and new.attempt > old.attempt:
        cond = new.condition(R.RESTARTING)
        why = cond.reason if cond else "Unknown"
        counter = metrics.JOBS_DISRUPTED if new.disruptions > old.disruptions else metrics.JOBS_RESTARTED
        counter.labels(ns, why).inc()
        loop.failure_seen_at = loop.woken_at
    if plan.create and loop.failure_seen_at is not None and new.attempt > 0:
        metrics.RECOVERY_SECONDS.observe(time.monotonic() - loop.failure_seen_at)
        loop.failure_seen_at = None
    if new.phase != old.phase and new.phase is not None and new.phase.terminal:
        if new.phase == api.Phase.SUCCEEDED:
            metrics.JOBS_SUCCEEDED.labels(ns).inc()
        else:
            cond = new.condition(R.FAILED)
            metrics.JOBS_FAILED.labels(ns, cond.reason if cond else "Unknown").inc()
    set_phase(loop, new.phase.value if new.phase else None)


def set_phase(loop: JobLoop, phase: str | None) -> None:
    if phase == loop.phase:
        return
    if loop.phase is not None:
        metrics.JOBS_BY_PHASE.labels(loop.phase).dec()
    if phase is not None:
        metrics.JOBS_BY_PHASE.labels(phase).inc()
    loop.phase = phase


def apply(backend: KubeBackend, loop: JobLoop, obj: dict[str, Any], job: api.DistributedTrainingJob,
          plan: Plan) -> bool:
    """Writes the status and acts on the plan, concurrently: every pod name is a function of the
    attempt, and counters only ever change through the status, so if the status write is lost (a
    crash, a conflict) the next reconcile re-makes the same decision, finds the same pods and
    counts nothing twice. Returns True if an action failed and should be retried soon."""
    ns, name = loop.namespace, loop.name
    failed = False
    new_status = status_body(plan.status)
    status_write = None
    if new_status != status_body(job.status):
        status_write = backend.pool.submit(backend.patch_status, ns, name, obj["metadata"]["resourceVersion"],
                                           new_status)
    if plan.create:
        if job.status.condition(R.CREATED) is None or plan.status.rendezvous_attempt != job.status.rendezvous_attempt:
            children = backend.pool.submit(backend.ensure_children, job)
        else:
            children = None
        job_now = job.model_copy(update={"status": plan.status})
        mono = time.monotonic()
        for launch in plan.create:
            loop.created[launch.name] = (Worker(launch.name, launch.index, launch.attempt, State.PENDING), mono)
        for pod, err in backend.create_workers(job_now, plan.create).items():
            loop.log.warning("creating worker %s failed: %s", pod,
                             api_message(err) if isinstance(err, ApiException) else err)
            loop.created.pop(pod, None)  # not expected any more: the next reconcile creates it again
            failed = True
        if children is not None:
            children.result()
    to_delete = [n for n in plan.delete if n not in loop.deleted]
    if to_delete:
        mono = time.monotonic()
        loop.deleted.update({n: mono for n in to_delete})
        for err in backend.delete_workers(ns, to_delete):
            loop.log.warning("deleting a worker failed: %s", api_message(err) if isinstance(err, ApiException) else err)
            failed = True
    if status_write is not None:
        status_write.result()  # raises Conflict: the caller reads the job again and decides again
    if plan.events:
        backend.post_events(obj, plan.events)
    if plan.delete_job:
        backend.delete_job(ns, name)
    return failed


async def run_loop(registry: Registry, loop: JobLoop) -> None:
    key = (loop.namespace, loop.name)
    while True:
        timeout = loop.requeue if loop.requeue is not None else RESYNC_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.wakeup.wait(), timeout=timeout)
        loop.wakeup.clear()
        indexed = list(registry.index.get(key, [])) if registry.index is not None else []
        started = time.monotonic()
        try:
            loop.requeue = await asyncio.to_thread(reconcile, registry.backend, loop, indexed)
        except ApiException as e:  # e.g. the namespace is terminating; the body says what the apiserver refused
            loop.log.warning("reconcile: API error %s: %s; retrying", e.status, api_message(e))
            loop.requeue = 5.0
        except Exception:  # never let one job's trouble stop its loop or the operator
            loop.log.exception("reconcile failed; retrying")
            loop.requeue = 5.0
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        if registry.loops.get(key) is not loop:
            return


def wake(registry: Registry, namespace: str, name: str) -> None:
    key = (namespace, name)
    loop = registry.loops.get(key)
    if loop is None:
        loop = JobLoop(namespace, name)
        loop.task = asyncio.create_task(run_loop(registry, loop), name=f"trainyard:{namespace}/{name}")
        registry.loops[key] = loop
    loop.wake()


# ---- kopf handlers ---------------------------------------------------------------------------


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "trainyard.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="trainyard.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="trainyard.dev")
    settings.watching.label_selectors["pods"] = LABEL_JOB_NAME
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    if "registry" not in memo:
        memo["registry"] = Registry(KubeBackend(load_config(memo.get("kubeconfig"))))
    if memo.get("metrics_port"):
        metrics.serve(int(memo["metrics_port"]))


@kopf.on.startup()
async def size_thread_pool(**_: Any) -> None:
    # Reconciles run in threads (the official client is synchronous); the default pool of
    # min(32, cpus + 4) threads would queue the jobs of a burst behind a handful of them.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="trainyard-reconcile"))


@kopf.index("pods", labels={LABEL_JOB_NAME: kopf.PRESENT})
async def worker_pods(namespace: str, labels: dict, body: kopf.Body, **_: Any) -> dict:
    worker = from_pod(dict(body))
    if worker is None:
        return {}
    owner = next((o.get("uid") for o in body.metadata.get("ownerReferences") or [] if o.get("controller")), "")
    return {(namespace, labels[LABEL_JOB_NAME]): (owner, worker)}


# Event handlers are async on purpose: they only touch in-memory state and must run on the loop.
@kopf.on.event("pods", labels={LABEL_JOB_NAME: kopf.PRESENT})
async def pod_event(event: dict, namespace: str, labels: dict, body: kopf.Body, memo: kopf.Memo,
              worker_pods: kopf.Index, **_: Any) -> None:
    registry: Registry = memo["registry"]
    registry.index = worker_pods
    job = labels[LABEL_JOB_NAME]
    loop = registry.loops.get((namespace, job))
    if event.get("type") == "DELETED" and loop is not None and body.metadata.name not in loop.deleted:
        # Someone else deleted it (or a node went away): the engine decides if that matters.
        worker = from_pod(dict(body))
        if worker is not None:
            loop.tombstones[worker.name] = worker.vanished()
    if loop is not None:
        loop.wake()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def job_event(event: dict, namespace: str, name: str, memo: kopf.Memo, worker_pods: kopf.Index,
              **_: Any) -> None:
    registry: Registry = memo["registry"]
    registry.index = worker_pods
    if event.get("type") == "DELETED":
        loop = registry.loops.pop((namespace, name), None)
        if loop is not None and loop.task is not None:
            loop.task.cancel()
            set_phase(loop, None)
        return
    wake(registry, namespace, name)


@kopf.on.cleanup()
async def stop_loops(memo: kopf.Memo, **_: Any) -> None:
    registry: Registry | None = memo.get("registry")
    if registry is None:
        return
    for loop in registry.loops.values():
        if loop.task is not None:
            loop.task.cancel()
    registry.loops.clear()


@kopf.on.probe(id="jobs")
def probe_jobs(memo: kopf.Memo, **_: Any) -> int:
    registry: Registry | None = memo.get("registry")
    return len(registry.loops) if registry else 0
