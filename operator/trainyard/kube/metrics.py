"""Prometheus metrics of the operator (`trainyard operator --metrics-port`).

Besides the usual outcome counters, Trainyard publishes what other operators do not: fan-out
latency (job created -> all workers created / running) and recovery latency (a worker failure
observed -> the replacement gang created).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)

JOBS_CREATED = Counter("trainyard_jobs_created_total", "Jobs whose first workers were created.",
                       ["namespace"], registry=REGISTRY)
JOBS_SUCCEEDED = Counter("trainyard_jobs_succeeded_total", "Jobs that succeeded.", ["namespace"], registry=REGISTRY)
JOBS_FAILED = Counter("trainyard_jobs_failed_total", "Jobs that failed, by condition reason.",
                      ["namespace", "reason"], registry=REGISTRY)
JOBS_RESTARTED = Counter("trainyard_jobs_restarted_total", "Restarts counted toward backoffLimit, by reason.",
                         ["namespace", "reason"], registry=REGISTRY)
JOBS_DISRUPTED = Counter("trainyard_jobs_disruptions_total", "Restarts after disruptions (not counted), by reason.",
                         ["namespace", "reason"], registry=REGISTRY)
JOBS_BY_PHASE = Gauge("trainyard_jobs", "Jobs this operator tracks, by phase.", ["phase"], registry=REGISTRY)

WORKERS_CREATED_SECONDS = Histogram(
    "trainyard_job_workers_created_seconds", "From job creation to all of its first workers created.",
    buckets=_LATENCY_BUCKETS, registry=REGISTRY)
WORKERS_RUNNING_SECONDS = Histogram(
    "trainyard_job_workers_running_seconds", "From job creation to all of its first workers running.",
    buckets=_LATENCY_BUCKETS, registry=REGISTRY)
RECOVERY_SECONDS = Histogram(
    "trainyard_recovery_seconds",
    "From the operator observing a worker failure to the replacement workers created (includes backoff).",
    buckets=_LATENCY_BUCKETS, registry=REGISTRY)
RECONCILE_SECONDS = Histogram(
    "trainyard_reconcile_duration_seconds", "Duration of one reconcile (read, decide, write, act).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
RECONCILE_LATENCY_SECONDS = Histogram(
    "trainyard_reconcile_latency_seconds",
    "From the event that woke a job's loop (a pod's or the job's) to the end of the reconcile it caused: "
    "the wait for a reconcile thread, the read and the writes.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60), registry=REGISTRY)
API_REQUESTS = Counter("trainyard_api_requests_total", "Kubernetes API requests, by verb, resource and status code.",
                       ["verb", "resource", "code"], registry=REGISTRY)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr, registry=REGISTRY)
