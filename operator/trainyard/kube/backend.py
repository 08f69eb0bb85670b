"""The Kubernetes backend of one job: its workers are the pods the index holds (plus what the
expectations know the watch has not shown yet), and a plan becomes API calls. What the apiserver
refuses to create is remembered as a Refusal and fed back to the engine, which reports it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from .. import api
from ..api import contract
from ..api import reasons as R
from ..api.names import DEFAULT_CLUSTER_DOMAIN, LABEL_QUEUE_NAME, claim_name, service_name, workload_name
from ..api.progress import rendezvous_annotation
from ..engine.backend import Applied
from ..engine.plan import Event, Launch, Plan
from ..engine.refusals import retry_at
from ..engine.workers import Child, Refusal, State, Worker
from ..engine.writes import write_wait
from . import kueue
from .client import Conflict, KubeClient, api_message, api_reason
from .expectations import Expectations
from .leases import LeaseState
from .manifests import (
    checkpoint_claim,
    headless_service,
    progress_lease,
    progress_role,
    progress_role_binding,
    worker_pod,
    workload,
)
from .nodes import NodeState

SERVICE, CLAIM, WORKLOAD = "Service", "PersistentVolumeClaim", "Workload"
PROGRESS_KINDS = ("Lease", "Role", "RoleBinding")
CLAIM_LOOKUP_SECONDS = 10.0  # how often a pending claim's state and latest warning are read


def status_body(status: api.DistributedTrainingJobStatus) -> dict[str, Any]:
    # Nulls stay in: in a merge patch they clear fields the new status no longer has.
    return status.model_dump(by_alias=True, mode="json")


def _message(err: BaseException) -> str:
    return api_message(err) if isinstance(err, ApiException) else f"{type(err).__name__}: {err}"


class KubeBackend:
    def __init__(self, client: KubeClient, indexed: Callable[[], list[tuple[str, Worker]]],
                 expectations: Expectations | None = None, log: logging.Logger | logging.LoggerAdapter | None = None,
                 nodes: Callable[[], dict[str, NodeState] | None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 workloads: Callable[[], list[kueue.WorkloadState]] | None = None,
                 kueue_served: Callable[[], bool] | None = None,
                 leases: Callable[[], list[tuple[str, LeaseState]]] | None = None,
                 cluster_domain: str = DEFAULT_CLUSTER_DOMAIN):
        self.client = client
        self.cluster_domain = cluster_domain  # the pods' DNS names end in it (--cluster-domain)
        self.clock = clock
        self.indexed = indexed  # (controller owner uid, worker) of every pod labelled with the job's name
        self.expectations = expectations or Expectations()
        self.log = log or logging.getLogger("trainyard.kube")
        self.nodes = nodes or (lambda: None)
        self.leases = leases or (lambda: [])  # (controller owner uid, state) of the Leases labelled with the job's name
        self.refused: dict[str, tuple[Launch | None, Refusal]] = {}  # by pod name, or by child kind
        self.claim: Child | None = None
        self.made: set[tuple[str, int]] = set()  # (kind, rendezvous attempt): children made for that gang
        self._claim_read = 0.0
        self._lost_nodes: set[str] = set()
        self.status_written_at: float | None = None  # our last status write (clock), None: none yet
        self.write_due: float | None = None  # when a status that may wait is to be written (clock)
        self.held_since: float | None = None  # when the status not written yet was first held back (clock)
        self.written: dict[str, Any] | None = None  # the job as our last status write left it (the answer)
        self.workloads = workloads or (lambda: [])  # the Workloads labelled with the job's name (kopf index)
        self.kueue_served = kueue_served or (lambda: False)
        self._workload_sent: str | None = None  # the Workload we created, until the index shows it
        self._flavors: dict[str, dict[str, Any]] = {}
        self._published: set[tuple[int, str]] = set()  # (rendezvous attempt, IP) written into the Lease
        self._progress_tried: int | None = None  # the rendezvous attempt whose gang the progress children were tried for
        self._progress_made: set[str] = set()  # the progress kinds this process made, or found to be the job's
        self._started: set[int] = set()  # the rendezvous attempts whose pods this process created

    # -- observe
    def observe(self, job: api.DistributedTrainingJob) -> tuple[list[Worker], list[Child]]:
        # A pod of a deleted job of the same name (its GC still pending) is not ours.
        seen = self.expectations.workers(w for owner, w in self.indexed() if owner == job.metadata.uid)
        seen = self._with_nodes(seen, (job.spec.template.get("spec") or {}).get("nodeName"))
        names = {w.name for w in seen}
        refused = [Worker(name, launch.index, launch.attempt, State.PENDING, exists=False, refusal=refusal)
                   for name, (launch, refusal) in self.refused.items() if launch is not None and name not in names]
        children = [Child(kind, name, exists=False, refusal=refusal) for kind, (launch, refusal) in self.refused.items()
                    if launch is None for name in [self._child_name(job, kind)]]
        if job.spec.checkpoint is not None and job.spec.checkpoint.created_claim and CLAIM not in self.refused \
                and any(w.state == State.PENDING and w.reason == R.UNSCHEDULABLE for w in seen):
            children.append(self._claim_state(job))
        if (queue := job.metadata.labels.get(LABEL_QUEUE_NAME)) is not None:
            children.append(self._workload_child(job, queue))
        lease = self._lease(job)
        if lease is not None:
            children.append(lease.child())
        return seen + refused, children

    # -- Kueue (kube.kueue)
    def workload(self, job: api.DistributedTrainingJob) -> kueue.WorkloadState | None:
        """The job's own Workload (another job's of the same name, GC pending, is not)."""
        return next((w for w in self.workloads() if w.owner_uid == job.metadata.uid), None)

    def _workload_child(self, job: api.DistributedTrainingJob, queue: str) -> Child:
        wl = self.workload(job)
        flavors = None
        if wl is not None and wl.admitted:
            try:
                flavors = self._flavor_specs(wl.flavors())
            except ApiException as e:
                self.log.warning("reading ResourceFlavors %s failed: %s", wl.flavors(), api_message(e))
        admission = kueue.admission(queue, wl, flavors, self.kueue_served())
        return Child(WORKLOAD, workload_name(job.metadata.name, job.metadata.uid), exists=wl is not None,
                     admission=admission)

    def _flavor_specs(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The assigned flavours' specs, read once each (a re-admission reads them again)."""
        for name in names:
            if name not in self._flavors:
                self._flavors[name] = self.client.resource_flavor(name) or {}
        return {n: self._flavors[n] for n in names}

    def _kueue_before(self, job: api.DistributedTrainingJob) -> None:
        """Before any pod: the Workload exists (Kueue admits it), and its spec.active follows
        spec.runPolicy.suspend (an inactive Workload gives its quota back)."""
        if job.metadata.labels.get(LABEL_QUEUE_NAME) is None or not self.kueue_served():
            return
        if job.metadata.deletionTimestamp is not None or (job.status.phase is not None and job.status.phase.terminal):
            return
        wl, meta = self.workload(job), job.metadata
        if wl is None:
            name = workload_name(meta.name, meta.uid)
            if self._workload_sent != name:
                self.client.create(workload(job))  # False (it exists): the index shows it soon
                self._workload_sent = name
            return
        self._workload_sent = None
        # Suspending deactivates the Workload; resuming a job that was suspended reactivates it. A
        # Workload someone else deactivated (kubectl, an admin) stays so: the job waits, evicted.
        resuming = not job.spec.run_policy.suspend and job.status.phase == api.Phase.SUSPENDED
        if (job.spec.run_policy.suspend and wl.active) or (resuming and not wl.active):
            self.client.patch_workload(meta.namespace, wl.name, {"spec": {"active": not job.spec.run_policy.suspend}})

    def _kueue_after(self, job: api.DistributedTrainingJob, status: api.DistributedTrainingJobStatus) -> bool:
        """After the status: PodsReady (and Finished once the job ended) on an admitted Workload,
        and an evicted Workload's quota released once none of the job's pods runs any more.
        Returns False if that release must wait for pods still stopping."""
        wl = self.workload(job) if job.metadata.labels.get(LABEL_QUEUE_NAME) is not None else None
        if wl is None:
            return True
        if wl.evicted:
            uid = job.metadata.uid
            if any(_still_running(w) for owner, w in self.indexed() if owner == uid):
                return False  # the quota stays reserved until the evicted workers are gone
            try:
                self.client.patch_workload_status(wl.namespace, wl.name, kueue.release_body(wl))
            except Conflict:
                return False  # Kueue wrote meanwhile: the index shows it soon, release then
            self.log.info("released the quota of evicted Workload %s (%s)", wl.name, wl.evicted)
            return True
        if wl.admitted or (status.phase is not None and status.phase.terminal and wl.reserved):
            conditions = kueue.owned_conditions(wl, status)
            if conditions is not None:
                self.client.apply_workload_status(wl.namespace, wl.name, kueue.apply_body(wl, conditions))
        return True

    def _lease(self, job: api.DistributedTrainingJob) -> LeaseState | None:
        return next((s for owner, s in self.leases() if owner == job.metadata.uid), None)

    def _with_nodes(self, workers: list[Worker], pinned: str | None) -> list[Worker]:
        """Workers on a node that is gone are lost at once; on an unready one, from when it stopped
        being Ready (the engine waits a grace before it counts them lost). A node the template pins
        (spec.nodeName) that does not exist is the template's mistake, not a disruption."""
        nodes = self.nodes()
        if nodes is None:
            return workers
        out, self._lost_nodes = [], set()
        for w in workers:
            if not w.node or not w.active:
                out.append(w)
                continue
            node = nodes.get(w.node)
            if node is None and w.node == pinned:
                out.append(replace(w, state=State.PENDING, ready=False, reason=R.NODE_NOT_FOUND,
                                   message=f"spec.template.spec.nodeName is {pinned!r}, and no such node exists"))
            elif node is None:
                self._lost_nodes.add(w.node)
                out.append(replace(w, state=State.FAILED, ready=False, disruption=R.NODE_LOST, reason=R.NODE_LOST,
                                   message=f"node {w.node} was deleted"))
            elif not node.ready:
                self._lost_nodes.add(w.node)
                out.append(replace(w, node_unready_since=node.since or datetime.now(UTC)))
            else:
                out.append(w)
        return out

    @staticmethod
    def _child_name(job: api.DistributedTrainingJob, kind: str) -> str:
        return service_name(job.metadata.name) if kind == SERVICE else claim_name(job.metadata.name)

    def _claim_state(self, job: api.DistributedTrainingJob) -> Child:
        """The checkpoint claim's phase and, when it is not bound, its latest warning (the binder's
        or the provisioner's reason), read at most every CLAIM_LOOKUP_SECONDS."""
        name = claim_name(job.metadata.name)
        if self.claim is None or time.monotonic() - self._claim_read > CLAIM_LOOKUP_SECONDS:
            self._claim_read = time.monotonic()
            try:
                phase, message = self.client.claim_state(job.metadata.namespace, name)
                self.claim = Child(CLAIM, name, exists=phase is not None, phase=phase or "", message=message)
            except ApiException as e:
                self.log.warning("reading claim %s failed: %s", name, api_message(e))
                self.claim = Child(CLAIM, name)
        return self.claim

    # -- apply
    def apply(self, job: api.DistributedTrainingJob, plan: Plan) -> Applied:
        """Deletes first, so the old gang is told to stop before its successor is created; then
        the children and the pods. Only if every creation succeeded is the status written (it
        counts the new pods as members); a refusal is remembered and the engine decides again.
        Events are posted once the status write has succeeded. A status that `engine.writes.write_wait`
        lets wait (a tally, a new job's first gang) is held back; the loop looks again when it is
        due (`status_due_in`)."""
        meta, client = job.metadata, self.client
        outcome = Applied.DONE
        self.written = None

        self._kueue_before(job)
        to_delete = self.expectations.expect_deleted(plan.delete)
        force = {w.name for owner, w in self.indexed() if w.node in self._lost_nodes}
        for err in client.delete_workers(meta.namespace, to_delete, force=force):
            self.log.warning("deleting a worker failed: %s", _message(err))
            outcome = Applied.RETRY_SOON

        refused = self._create(job, plan)
        if refused:
            self._progress(job, plan)
            return Applied.DECIDE_AGAIN

        new_status = status_body(plan.status)
        self.write_due = None
        if new_status != status_body(job.status):
            now = self.clock()
            if self.held_since is None:
                self.held_since = now
            wait = write_wait(job.status, plan.status, bool(plan.events), self.held_since, self.status_written_at, now)
            if wait == 0:
                self.written = client.patch_status(meta.namespace, meta.name, meta.resourceVersion,
                                                   new_status)  # raises Conflict
                self.status_written_at, self.held_since = self.clock(), None
            else:
                self.write_due = now + wait
        else:
            self.held_since = None  # nothing waits (a tally that moved back)
        if plan.events:
            client.post_events(meta, plan.events)
        if not self._kueue_after(job, plan.status):
            outcome = Applied.RETRY_SOON
        if plan.delete_job:
            client.delete_job(meta.namespace, meta.name)
        self.expectations.forget_before(plan.status.rendezvous_attempt)
        # Progress reporting, after the status: never in the way of a decision's own writes.
        self._progress(job, plan)
        return outcome

    def status_due_in(self) -> float | None:
        """When the loop must look again to write a waiting status (seconds), or None if none waits."""
        return None if self.write_due is None else max(0.0, self.write_due - self.clock())

    def _create(self, job: api.DistributedTrainingJob, plan: Plan) -> bool:
        """Creates the children the plan needs and its pods, in parallel; True if any was refused."""
        manifests: list[tuple[Launch | None, str, dict[str, Any] | BaseException]] = []
        now = datetime.now(UTC)
        if plan.ensure_children:
            for kind, build in ((SERVICE, headless_service), (CLAIM, checkpoint_claim)):
                if kind in self.refused and now < retry_at(self.refused[kind][1]):
                    continue
                if (kind, plan.status.rendezvous_attempt) in self.made:
                    continue  # this gang's are made (a decision after a refusal needs them no more)
                manifest = build(job)
                if manifest is not None:
                    manifests.append((None, kind, manifest))
        job_now = job.model_copy(update={"status": plan.status})
        self._started.update(launch.attempt for launch in plan.create)
        for launch in plan.create:
            try:
                manifests.append((launch, launch.name, worker_pod(job_now, launch, plan.placement, self.cluster_domain)))
            except Exception as e:  # noqa: BLE001 - a template the builder cannot use is the user's to fix
                manifests.append((launch, launch.name, _Refused(f"the pod template cannot be used: {e}")))
        if not manifests:
            return False
        self.expectations.expect_created(launch for launch, _, m in manifests if launch is not None)
        buildable = [m for _, _, m in manifests if isinstance(m, dict)]
        results = self.client.create_all(buildable) if buildable else {}
        any_refused = False
        for launch, key, m in manifests:
            err = m if isinstance(m, BaseException) else None
            if isinstance(m, dict):
                result = results[m["metadata"]["name"]]
                err = result if isinstance(result, BaseException) else None
                if result is False:  # it existed: from an earlier try of ours, or someone else's
                    err = self._foreign(job, m)
            if err is None:
                self.refused.pop(key, None)
                if launch is None:
                    self.made.add((key, plan.status.rendezvous_attempt))
                continue
            any_refused = True
            if launch is not None:
                self.expectations.creation_failed(launch.name)
            self._refuse(launch, key, err, now)
        return any_refused

    # -- progress reports (the job's Lease; kube.leases, api.contract): best effort, never a refusal
    def _progress(self, job: api.DistributedTrainingJob, plan: Plan) -> None:
        """The job's Lease (with its Role and RoleBinding) once the gang's worker 0 has its pod IP,
        made with that IP in it; after that, worker 0's IP of each new gang, one patch per gang.

        Not at the gang's start: in a burst of new jobs, three creations per job next to the pods'
        own delayed every job's pods (P2, 500 jobs x 8: 2,000 progress writes in the 24 s it took to
        create 4,000 pods). Until worker 0 has an address no trainer of the gang runs, so none can
        report; the launchers wait for the Lease (trainyard_trainer.launch) and the first patch of
        the rendezvous address is saved."""
        attempt = plan.status.rendezvous_attempt
        host = next((w for _, w in self.indexed()
                     if w.index == 0 and w.attempt == attempt and w.address and w.active), None)
        if host is None:
            return
        lease = self._lease(job)
        kinds = self._progress_to_try(lease is not None, attempt)
        if kinds:
            self._progress_tried = attempt
            if lease is not None:
                kinds = {k for k in PROGRESS_KINDS if k in kinds and not self._progress_exists(job, k)}
            if kinds:
                self._progress_children(job, kinds, attempt, host.address)
        if lease is not None:
            self._publish_rendezvous(job, lease, attempt, host.address)

    def _progress_to_try(self, lease_seen: bool, attempt: int) -> set[str]:
        """Once per gang at most: all three while the Lease is not to be seen (someone deleted it, or
        no operator made it yet). With the Lease there, the Role and RoleBinding this process has not
        made or seen, but only for a gang it started (`_progress_exists` reads them first): a plain
        operator restart writes nothing, and a child an earlier process could not make is tried again
        at the next gang start."""
        if self._progress_tried == attempt:
            return set()
        if not lease_seen:
            return set(PROGRESS_KINDS)
        if attempt not in self._started:
            return set()
        return set(PROGRESS_KINDS[1:]) - self._progress_made

    def _progress_exists(self, job: api.DistributedTrainingJob, kind: str) -> bool:
        """Whether the job's Role or RoleBinding is there, by a read: a new process learns what an
        earlier one made without a write. Not the job's, or unreadable: the creation will say why."""
        manifest = {"Role": progress_role, "RoleBinding": progress_role_binding}[kind](job)
        try:
            owners = self.client.owners(manifest)
        except Exception:  # noqa: BLE001 - the creation that follows reports it
            return False
        if owners is None or job.metadata.uid not in owners:
            return False
        self._progress_made.add(kind)
        return True

    def _progress_children(self, job: api.DistributedTrainingJob, kinds: set[str], attempt: int, address: str) -> None:
        """The Lease, and the Role and RoleBinding that let the job's ServiceAccount get and patch it
        (those of `kinds`). A refusal is a warning: without them the job still trains, the engine
        judges no hang (it sees no report of the gang) and trainyard-launch's watchdog remains."""
        # Two round trips, not three: the Lease with the Role, then the binding. Not all three
        # together: the operator has no `bind` verb, so the apiserver checks a RoleBinding against
        # the rules of the Role it names, and refuses it (404) while that Role is not there yet.
        lease = progress_lease(job, rendezvous=(attempt, address))
        failed: list[str] = []
        for manifests in ((lease, progress_role(job)), (progress_role_binding(job),)):
            todo = [m for m in manifests if m["kind"] in kinds]
            for manifest, result in zip(todo, self.client.create_each(todo) if todo else [], strict=True):
                err = result if isinstance(result, BaseException) else None
                if result is False:
                    try:
                        err = self._foreign(job, manifest)
                    except Exception as e:  # noqa: BLE001 - the apiserver's refusal, whatever it is
                        err = e
                if err is None:
                    self._progress_made.add(manifest["kind"])
                    if manifest is lease and result is not False:
                        self._published.add((attempt, address))
                else:
                    self._progress_made.discard(manifest["kind"])
                    failed.append(f"{manifest['kind']} {manifest['metadata']['name']}: {_message(err)}")
        if failed:
            # Once per gang at most: a log line alone is a fault nobody sees.
            self.log.warning("creating the progress children failed: %s", "; ".join(failed))
            self.client.post_events(job.metadata, [Event(
                "Warning", R.PROGRESS_UNAVAILABLE,
                f"creating {'; '.join(failed)}. The job trains, but without status.progress; hang detection "
                "(runPolicy.progressDeadlineSeconds) falls back to trainyard-launch's watchdog. Tried again at "
                "the next gang start.")])

    def _publish_rendezvous(self, job: api.DistributedTrainingJob, lease: LeaseState, attempt: int,
                            address: str) -> None:
        """Worker 0's pod IP for the current rendezvous, into the Lease as soon as the pod has one: the
        other workers' launchers read it while the cluster DNS still answers (and caches) "no such
        name" for worker 0. One patch per gang (none for the gang the Lease was made for)."""
        if (lease.rendezvous is not None and lease.rendezvous[0] == attempt) or (attempt, address) in self._published:
            return
        try:
            self.client.patch_lease_annotations(job.metadata.namespace, lease.name,
                                                {contract.ANNOTATION_RENDEZVOUS: rendezvous_annotation(attempt,
                                                                                                       address)})
            self._published.add((attempt, address))
        except Exception as e:  # noqa: BLE001 - the workers wait for DNS instead
            self.log.warning("publishing worker 0's address in Lease %s failed: %s", lease.name, _message(e))

    def _foreign(self, job: api.DistributedTrainingJob, manifest: dict[str, Any]) -> BaseException | None:
        """The name is taken; if the object is not this job's, say so (a retained claim has no owner)."""
        if manifest["kind"] == CLAIM and job.spec.checkpoint is not None and job.spec.checkpoint.retain:
            return None
        owners = self.client.owners(manifest)
        if owners is None or job.metadata.uid in owners:
            return None
        return _Conflict(f"{manifest['kind']} {manifest['metadata']['name']} already exists and does not belong to "
                         f"this job (owners: {', '.join(owners) or 'none'}); delete it or rename the job")

    def _refuse(self, launch: Launch | None, key: str, err: BaseException, now: datetime) -> None:
        if isinstance(err, _Refused):
            code, reason, message = err.code, err.reason, str(err)
        elif isinstance(err, ApiException) and err.status:
            code, reason, message = err.status, api_reason(err), api_message(err)
        else:  # the apiserver could not be reached: it may heal
            code, reason, message = 503, "Unavailable", _message(err)
        previous = self.refused.get(key)
        first, count = (previous[1].first_at, previous[1].count + 1) if previous else (now, 1)
        self.refused[key] = (launch, Refusal(code, reason, message, first, now, count))
        self.log.warning("creating %s was refused (%s %s): %s", key, code, reason, message)


class _Refused(Exception):
    code = 422
    reason = "Invalid"


class _Conflict(_Refused):
    code = 409
    reason = "AlreadyExists"


def _still_running(w: Worker) -> bool:
    """The pod may still run: not ended, or deleted by us and still terminating."""
    return w.active or (w.disruption == R.POD_DELETED and w.exit_code is None and w.finished_at is None)
