"""The Kubernetes backend of one job: its workers are the pods the index holds (plus what the
expectations know the watch has not shown yet), and a plan becomes API calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from .. import api
from ..engine.plan import Plan
from ..engine.workers import Worker
from .client import KubeClient, api_message
from .expectations import Expectations
from .manifests import checkpoint_claim, headless_service, worker_pod


def status_body(status: api.DistributedTrainingJobStatus) -> dict[str, Any]:
    # Nulls stay in: in a merge patch they clear fields the new status no longer has.
    return status.model_dump(by_alias=True, mode="json")


def _message(err: BaseException) -> str:
    return api_message(err) if isinstance(err, ApiException) else str(err)


class KubeBackend:
    def __init__(self, client: KubeClient, indexed: Callable[[], list[tuple[str, Worker]]],
                 expectations: Expectations | None = None, log: logging.Logger | logging.LoggerAdapter | None = None):
        self.client = client
        self.indexed = indexed  # (controller owner uid, worker) of every pod labelled with the job's name
        self.expectations = expectations or Expectations()
        self.log = log or logging.getLogger("trainyard.kube")

    def observe(self, job: api.DistributedTrainingJob) -> list[Worker]:
        # A pod of a deleted job of the same name (its GC still pending) is not ours.
        seen = [w for owner, w in self.indexed() if owner == job.metadata.uid]
        return self.expectations.workers(seen)

    def apply(self, job: api.DistributedTrainingJob, plan: Plan) -> bool:
        """Deletes first, so the old gang is told to stop before its successor is created; then
        the children, the pods and the status write run concurrently: every pod name is a function
        of the attempt, and counters only change through the status, so a lost status write (a
        crash, a conflict) makes the next reconcile re-decide the same, find the same pods and
        count nothing twice. Events are posted once the status write has succeeded."""
        meta, client = job.metadata, self.client
        failed = False

        to_delete = self.expectations.expect_deleted(plan.delete)
        for err in client.delete_workers(meta.namespace, to_delete):
            self.log.warning("deleting a worker failed: %s", _message(err))
            failed = True

        status_write = None
        new_status = status_body(plan.status)
        if new_status != status_body(job.status):
            status_write = client.pool.submit(client.patch_status, meta.namespace, meta.name, meta.resourceVersion,
                                              new_status)
        if plan.create:
            children = None
            if plan.ensure_children:
                manifests = [headless_service(job)]
                if (claim := checkpoint_claim(job)) is not None:
                    manifests.append(claim)
                children = client.pool.submit(client.create_all, manifests)
            job_now = job.model_copy(update={"status": plan.status})
            self.expectations.expect_created(plan.create)
            for name, err in client.create_all([worker_pod(job_now, launch) for launch in plan.create]).items():
                self.log.warning("creating worker %s failed: %s", name, _message(err))
                self.expectations.creation_failed(name)
                failed = True
            if children is not None:
                for name, err in children.result().items():
                    self.log.warning("creating %s failed: %s", name, _message(err))
                    failed = True

        if status_write is not None:
            status_write.result()  # raises Conflict: the caller reads the job again and decides again
        if plan.events:
            client.post_events(meta, plan.events)
        if plan.delete_job:
            client.delete_job(meta.namespace, meta.name)
        self.expectations.forget_before(plan.status.rendezvous_attempt)
        return failed
