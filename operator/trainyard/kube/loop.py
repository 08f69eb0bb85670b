"""One reconcile loop per job: woken at once by its pods' and its own events, by the plan's
requeue time, and by a slow resync as a safety net. Bursts of events coalesce into one reconcile.

`reconcile_job` is the whole Kubernetes reconcile of one job, in order: read the job, parse it
(an object the models refuse ends Failed/InvalidSpec), observe, decide, apply; a conflict on
the status write means the job changed meanwhile, so it is read and decided again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from .. import api
from ..api import reasons as R
from ..api.errors import validation_message
from ..api.names import DEFAULT_CLUSTER_DOMAIN
from ..engine import Applied, reconcile
from ..engine.conditions import set_condition
from ..engine.plan import Event, Plan
from ..engine.progress import PROGRESS_WRITE_SECONDS
from ..engine.workers import Worker
from . import metrics
from .backend import KubeBackend, status_body
from .client import Conflict, KubeClient, api_message
from .expectations import Expectations
from .jobcache import JobCache
from .leases import LeaseState
from .nodes import NodeState

log = logging.getLogger("trainyard.controller")

RESYNC_SECONDS = 300.0
CONFLICT_RETRIES = 5
# A pod that only made progress (created, scheduled, started) wakes its job this much later, so a
# gang's pods starting one by one cost one reconcile, not one each. Anything else (a failure, a
# deletion, a pod that ended, the job itself, a node, a Workload) wakes it at once.
PROGRESS_DELAY_SECONDS = 0.5


def job_logger(namespace: str, name: str) -> logging.LoggerAdapter:
    """A logger whose every line names the job: kopf's formatters put k8s_ref into a prefix, or
    into the "object" field of JSON logs."""
    ref = {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": name, "namespace": namespace}
    return logging.LoggerAdapter(log, {"k8s_ref": ref, "k8s_skip": True})


def invalid_spec_status(obj: dict[str, Any], error: ValidationError, now: datetime) -> dict[str, Any] | None:
    """A Failed status for an object pydantic rejects, or None if it already says so."""
    status = api.DistributedTrainingJobStatus.model_validate(obj.get("status") or {})
    if status.phase == api.Phase.FAILED:
        return None
    status.phase = api.Phase.FAILED
    status.completion_time = now
    status.message = f"invalid spec: {validation_message(error)}"
    set_condition(status, R.FAILED, True, R.INVALID_SPEC, status.message, now)
    return status_body(status)


@dataclass
class JobLoop:
    """In-memory state of one job's loop. Losing it (operator restart) is safe: the expectations
    only hide the watch's lag behind our own writes."""

    namespace: str
    name: str
    client: KubeClient
    indexed: Callable[[], list[tuple[str, Worker]]]
    nodes: Callable[[], dict[str, NodeState] | None] = lambda: None
    workloads: Callable[[], list[Any]] = lambda: []
    kueue: Callable[[], bool] = lambda: False
    leases: Callable[[], list[tuple[str, LeaseState]]] = lambda: []
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    requeue: float | None = None
    expectations: Expectations = field(default_factory=Expectations)
    cache: JobCache = field(default_factory=JobCache)
    woken_at: float = 0.0  # when the event that triggered the next reconcile arrived
    failure_seen_at: float | None = None  # a restart is decided; its new workers are not created yet
    phase: str | None = None
    lease_seen: tuple = ()  # what the last lease event that woke the loop said (lease_changed)
    lease_woken_at: float = 0.0
    lease_timer: asyncio.TimerHandle | None = None
    log: logging.LoggerAdapter = field(init=False)
    backend: KubeBackend = field(init=False)
    _nudge: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)
    _nudged_at: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = job_logger(self.namespace, self.name)
        self.backend = KubeBackend(self.client, self.indexed, self.expectations, self.log, self.nodes,
                                   workloads=self.workloads, kueue_served=self.kueue, leases=self.leases,
                                   cluster_domain=self.cluster_domain)

    def lease_changed(self, lease: LeaseState) -> None:
        """The job's Lease changed (rank 0 renews it every few seconds while it trains). It wakes the
        loop when the gang's reporting changed (a new attempt, its start, its first step, the
        launcher's start; worker 0's address is the operator's own write), and otherwise at most every
        PROGRESS_WRITE_SECONDS, as often as status.progress may change. Hang detection needs no
        wake-up: the engine's timer reads the newest report when it fires."""
        r = lease.report
        seen = (r.attempt if r else None, r.training if r else None, lease.launcher)
        now = time.monotonic()
        if seen != self.lease_seen or now - self.lease_woken_at >= PROGRESS_WRITE_SECONDS:
            self.lease_seen = seen
            self._lease_wake()
        elif self.lease_timer is None:  # held back: the newest report is looked at when it may be written
            delay = self.lease_woken_at + PROGRESS_WRITE_SECONDS - now
            self.lease_timer = asyncio.get_running_loop().call_later(delay, self._lease_wake)

    def _lease_wake(self) -> None:
        if self.lease_timer is not None:
            self.lease_timer.cancel()
            self.lease_timer = None
        self.lease_woken_at = time.monotonic()
        self.wake()

    def wake(self) -> None:
        if self._nudge is not None:
            self._nudge.cancel()
            self._nudge = None
        if not self.wakeup.is_set():
            self.woken_at = self._nudged_at or time.monotonic()
            self._nudged_at = None
            self.wakeup.set()

    def nudge(self) -> None:
        """A pod made progress: reconcile within PROGRESS_DELAY_SECONDS, with whatever else arrives
        meanwhile (a wake() meanwhile reconciles at once)."""
        if self.wakeup.is_set() or self._nudge is not None:
            return
        self._nudged_at = time.monotonic()
        self._nudge = asyncio.get_running_loop().call_later(PROGRESS_DELAY_SECONDS, self._nudged)

    def _nudged(self) -> None:
        self._nudge = None
        self.wake()

    def next_wait(self) -> float:
        """Seconds until the next reconcile without an event: the plan's wake-up, and never longer
        than the resync, which stays a safety net even while a deadline hours away is pending."""
        return RESYNC_SECONDS if self.requeue is None else min(self.requeue, RESYNC_SECONDS)

    def reconcile(self, fresh: bool = True) -> float | None:
        """One reconcile of the job (in a thread). Returns when to look again (seconds), or None:
        the plan's wake-up, or sooner to write a status that is waiting (kube.backend).
        `fresh=False` (an event woke it): the job as the cache knows it, if it does (kube.jobcache)."""
        when = self._reconcile(fresh)
        due = self.backend.status_due_in()
        return due if due is not None and (when is None or due < when) else when

    def _read(self, fresh: bool) -> dict[str, Any] | None:
        obj = None if fresh else self.cache.read()
        if obj is None:
            obj = self.client.get_job(self.namespace, self.name)
            if obj is not None:
                self.cache.known(obj)
        return obj

    def _reconcile(self, fresh: bool) -> float | None:
        for _ in range(CONFLICT_RETRIES):
            obj = self._read(fresh)
            self.backend.write_due = None  # what waits is decided again from this read
            if obj is None:
                return None
            now = datetime.now(UTC)
            try:
                job = api.DistributedTrainingJob.from_dict(obj)
            except ValidationError as e:
                body = invalid_spec_status(obj, e, now)
                if body is not None:
                    self.cache.known(self.client.patch_status(self.namespace, self.name,
                                                              obj["metadata"]["resourceVersion"], body))
                    self.client.post_events(api.ObjectMeta.model_validate(obj["metadata"]),
                                            [Event("Warning", R.INVALID_SPEC, body["message"])])
                return None
            try:
                plan, applied = reconcile(job, self.backend, now)
            except Conflict:
                self.log.debug("conflict writing the status; deciding again")
                self.cache.forget()
                fresh = True
                continue
            if self.backend.written is not None:
                self.cache.known(self.backend.written)
            if applied == Applied.DECIDE_AGAIN:
                continue  # a creation was refused: decide with it known, and write that status
            self.record(job, plan)
            if applied == Applied.RETRY_SOON:
                return min(plan.requeue_after or 1.0, 1.0)
            return plan.requeue_after
        return 1.0

    async def run(self, loops: Loops) -> None:
        key = (self.namespace, self.name)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=self.next_wait())
            woken = self.wakeup.is_set()  # by an event, not by the requeue or the resync
            self.wakeup.clear()
            started = time.monotonic()
            since = self.woken_at if woken else started
            try:
                self.requeue = await asyncio.to_thread(self.reconcile, not woken)
            except ApiException as e:  # e.g. the namespace is terminating; the body says what the apiserver refused
                self.log.warning("reconcile: API error %s: %s; retrying", e.status, api_message(e))
                self.requeue = 5.0
            except Exception:  # never let one job's trouble stop its loop or the operator
                self.log.exception("reconcile failed; retrying")
                self.requeue = 5.0
            finally:
                done = time.monotonic()
                metrics.RECONCILE_SECONDS.observe(done - started)
                if woken:
                    metrics.RECONCILE_LATENCY_SECONDS.observe(done - since)
            if loops.get(key) is not self:
                return

    def record(self, job: api.DistributedTrainingJob, plan: Plan) -> None:
        """Metrics for what this reconcile decided and did (it has already been applied)."""
        ns, old, new = self.namespace, job.status, plan.status
        reasons = {e.reason for e in plan.events}
        now = datetime.now(UTC)
        age = (now - job.metadata.creationTimestamp).total_seconds() if job.metadata.creationTimestamp else None
        created, was = new.condition(R.CREATED), old.condition(R.CREATED)
        # The decision that created the first gang's last pods (its status may be written later)
        if (plan.create and new.attempt == 0 and created is not None and created.status == "True"
                and (was is None or was.status != "True")):
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
            self.failure_seen_at = self.woken_at
        if plan.create and self.failure_seen_at is not None and new.attempt > 0:
            metrics.RECOVERY_SECONDS.observe(time.monotonic() - self.failure_seen_at)
            self.failure_seen_at = None
        if new.phase != old.phase and new.phase is not None and new.phase.terminal:
            if new.phase == api.Phase.SUCCEEDED:
                metrics.JOBS_SUCCEEDED.labels(ns).inc()
            else:
                cond = new.condition(R.FAILED)
                metrics.JOBS_FAILED.labels(ns, cond.reason if cond else "Unknown").inc()
        self.set_phase(new.phase.value if new.phase else None)

    def set_phase(self, phase: str | None) -> None:
        if phase == self.phase:
            return
        if self.phase is not None:
            metrics.JOBS_BY_PHASE.labels(self.phase).dec()
        if phase is not None:
            metrics.JOBS_BY_PHASE.labels(phase).inc()
        self.phase = phase


@dataclass
class Loops:
    """Every job's loop, by (namespace, name), and the pod index they observe."""

    client: KubeClient
    index: Any = None  # the kopf index of pods by job, bound at startup
    node_index: Any = None  # the kopf index of node states by name, bound at startup
    lease_index: Any = None  # the kopf index of the jobs' progress Leases, bound at startup
    loops: dict[tuple[str, str], JobLoop] = field(default_factory=dict)
    node_ready: dict[str, bool | None] = field(default_factory=dict)
    workload_index: Any = None  # the kopf index of Kueue Workloads by job, bound at startup
    kueue: bool = False  # Kueue's Workload API is served (read at startup)
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN  # --cluster-domain: the pods' DNS names end in it

    def get(self, key: tuple[str, str]) -> JobLoop | None:
        return self.loops.get(key)

    def indexed(self, key: tuple[str, str]) -> Callable[[], list[tuple[str, Worker]]]:
        return lambda: list(self.index.get(key, [])) if self.index is not None else []

    def workloads(self, key: tuple[str, str]) -> Callable[[], list[Any]]:
        return lambda: list(self.workload_index.get(key, [])) if self.workload_index is not None else []

    def leases(self, key: tuple[str, str]) -> Callable[[], list[tuple[str, LeaseState]]]:
        return lambda: list(self.lease_index.get(key, [])) if self.lease_index is not None else []

    def nodes(self) -> dict[str, NodeState] | None:
        """Every node's state (None: nodes are not watched, so no worker is judged by its node)."""
        if self.node_index is None:
            return None
        return {name: next(iter(states)) for name, states in self.node_index.items()}

    def node_changed(self, node: str, ready: bool | None) -> None:
        """A node's readiness changed, or it went away (None): wake every job with a worker on it.
        Heartbeats that change nothing wake nobody."""
        if node in self.node_ready and self.node_ready[node] == ready:
            return
        self.node_ready[node] = ready
        if ready is None:
            del self.node_ready[node]
        for key, loop in list(self.loops.items()):
            if any(w.node == node for _, w in self.indexed(key)()):
                loop.wake()

    def wake(self, namespace: str, name: str, body: Any = None) -> JobLoop:
        """Wakes the job's loop, starting it on the job's first event (`body`: the job as the
        watch delivered it)."""
        key = (namespace, name)
        loop = self.loops.get(key)
        if loop is None:
            loop = JobLoop(namespace, name, self.client, self.indexed(key), self.nodes, self.workloads(key),
                           lambda: self.kueue, self.leases(key), self.cluster_domain)
            loop.task = asyncio.create_task(loop.run(self), name=f"trainyard:{namespace}/{name}")
            self.loops[key] = loop
        if body is not None:
            loop.cache.from_watch(body)
        loop.wake()
        return loop

    def stop(self, namespace: str, name: str) -> None:
        loop = self.loops.pop((namespace, name), None)
        if loop is not None:
            if loop.task is not None:
                loop.task.cancel()
            if loop._nudge is not None:
                loop._nudge.cancel()
            loop.set_phase(None)

    def stop_all(self) -> None:
        for key in list(self.loops):
            self.stop(*key)
