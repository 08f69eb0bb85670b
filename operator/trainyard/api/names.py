"""Deterministic names and labels. Every child's name is a pure function of the job and the
attempt, which is what makes each reconcile step idempotent across operator restarts: creating
an object that already exists is a no-op (409), never a duplicate."""

from __future__ import annotations

LABEL_JOB_NAME = "trainyard.dev/job-name"
LABEL_WORKER_INDEX = "trainyard.dev/worker-index"
LABEL_ATTEMPT = "trainyard.dev/attempt"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "trainyard"


def worker_name(job: str, attempt: int, index: int) -> str:
    """Pod name and hostname. The attempt is part of it, so a new gang never waits for the old
    gang's pods to terminate and two attempts never share a DNS name."""
    return f"{job}-{attempt}-{index}"


def worker_selector(job: str) -> str:
    """The label selector of a job's worker pods, as status.selector holds it for the scale subresource."""
    return f"{LABEL_JOB_NAME}={job}"


def service_name(job: str) -> str:
    return job


def claim_name(job: str) -> str:
    return f"{job}-checkpoints"


def worker_fqdn(job: str, namespace: str, attempt: int, index: int) -> str:
    return f"{worker_name(job, attempt, index)}.{service_name(job)}.{namespace}.svc"


def rendezvous_id(job_uid: str, rendezvous_attempt: int) -> str:
    """torchrun closes a rendezvous id for good once an agent exits, so every gang gets a new one."""
    return f"{job_uid}-{rendezvous_attempt}"
