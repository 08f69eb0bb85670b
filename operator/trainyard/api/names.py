"""Deterministic names and labels. Every child's name is a pure function of the job and the
attempt, which is what makes each reconcile step idempotent across operator restarts: creating
an object that already exists is a no-op (409), never a duplicate."""

from __future__ import annotations

import re

LABEL_JOB_NAME = "trainyard.dev/job-name"
LABEL_WORKER_INDEX = "trainyard.dev/worker-index"
LABEL_ATTEMPT = "trainyard.dev/attempt"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "trainyard"
# Kueue's own label: a job that carries it waits in that LocalQueue until Kueue admits it.
LABEL_QUEUE_NAME = "kueue.x-k8s.io/queue-name"


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


def progress_lease_name(job: str) -> str:
    """The job's Lease (coordination.k8s.io) that rank 0 renews with its progress; the Role and the
    RoleBinding that let the job's ServiceAccount patch exactly that object have the same name."""
    return f"{job}-progress"


# The cluster's DNS domain (the kubelet's clusterDomain): the operator's --cluster-domain, the chart's
# clusterDomain, for clusters that use another one.
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_cluster_domain(value: str) -> str:
    """A cluster domain as the kubelet's clusterDomain takes it (a DNS subdomain; one trailing dot
    allowed), lower-cased and without the dot; ValueError naming what is wrong."""
    domain = value.strip().lower()
    domain = domain[:-1] if domain.endswith(".") else domain
    if not domain:
        raise ValueError("the cluster domain is empty (the kubelet's clusterDomain, e.g. cluster.local)")
    if len(domain) > 253:
        raise ValueError(f"the cluster domain {value!r} is longer than 253 characters")
    for label in domain.split("."):
        if not _DNS_LABEL.fullmatch(label):
            raise ValueError(f"the cluster domain {value!r} is not a DNS name: label {label!r} must be 1-63 "
                             "characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
    return domain


def worker_fqdn(job: str, namespace: str, attempt: int, index: int,
                cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """The worker pod's DNS name (hostname.subdomain of the headless Service), absolute: with the
    cluster domain and a trailing dot, so the pod's resolver asks for exactly this name once. A
    relative `...<ns>.svc` has fewer dots than the pods' ndots:5, so every lookup would walk the
    search list first (<ns>.svc.<domain>, svc.<domain>, <domain>) and then ask for `...svc.` as
    is, which outside the cluster zone goes to the upstream resolvers: four questions (times A and
    AAAA) per try while the record does not exist yet, each NXDOMAIN cached by the cluster DNS."""
    return f"{worker_name(job, attempt, index)}.{service_name(job)}.{namespace}.svc.{cluster_domain.strip('.')}."


def rendezvous_id(job_uid: str, rendezvous_attempt: int) -> str:
    """torchrun closes a rendezvous id for good once an agent exits, so every gang gets a new one."""
    return f"{job_uid}-{rendezvous_attempt}"


def workload_name(job: str, uid: str) -> str:
    """The Kueue Workload of a queued job: deterministic, so a restarted operator finds it, and the
    uid's start, so a new job of the same name gets a new one (at most 253 characters)."""
    return f"dtj-{job[:200]}-{uid[:8]}"
