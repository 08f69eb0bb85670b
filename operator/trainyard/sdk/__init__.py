"""Trainyard's Python SDK: submit, watch and read DistributedTrainingJobs from scripts and Jupyter.

    from trainyard.sdk import Job, TrainyardClient, parse_progress

    job = Job.from_yaml("examples/digits-ddp.yaml")          # or Job.new("demo", "img:1", "python train.py", workers=4)
    client = TrainyardClient()                                # the current kubeconfig context and its namespace
    name = client.submit(job)
    status = client.wait(name, timeout=3600)                  # a live status table in a terminal or a notebook
    client.progress(name)                                     # status.progress: step, percent, ETA, loss ...

`LocalClient` has the same methods for the workstation runtime (`trainyard run`'s engine and
processes, in a thread of this process): a notebook without a cluster.
    steps = parse_progress(client.logs(name))                 # [{"step": 10, "loss": 2.28, ...}, ...]

It is built on the pydantic models of `trainyard.api` (the same ones the CRD is generated from),
and every failure is a `TrainyardError` subclass with a one-line message: `ClusterUnreachable`,
`CRDNotInstalled`, `JobNotFound`, `InvalidSpec` (the apiserver's message, which names the field),
`JobExists`, `LogsUnavailable`, `WaitTimeout` (a `TimeoutError` carrying the last status).
The `trainyard` command (`trainyard.cli`) is a thin layer over this package.
"""

from .client import TrainyardClient
from .errors import (
    AccessDenied,
    ApiError,
    ClusterUnreachable,
    CRDNotInstalled,
    InvalidInput,
    InvalidSpec,
    JobExists,
    JobNotFound,
    LogsUnavailable,
    NamespaceNotFound,
    NotADistributedTrainingJob,
    TrainyardError,
    WaitTimeout,
)
from .info import DTJ, EventInfo, Resource, WorkerInfo, age, human_age
from .job import Job, JobMeta
from .local import LocalClient
from .logs import LogItem, interleave, iter_lines, merge_by_time
from .progress import parse_progress, progress_text
from .view import StatusView, job_progress, progress_line, render_status, status_line

__all__ = [
    "DTJ", "AccessDenied", "ApiError", "CRDNotInstalled", "ClusterUnreachable", "EventInfo", "InvalidInput",
    "InvalidSpec", "Job", "JobExists", "JobMeta", "JobNotFound", "LocalClient", "LogItem", "LogsUnavailable", "NamespaceNotFound",
    "NotADistributedTrainingJob", "Resource", "StatusView", "TrainyardClient", "TrainyardError", "WaitTimeout",
    "WorkerInfo", "age", "human_age", "interleave", "iter_lines", "job_progress", "merge_by_time", "parse_progress",
    "progress_line", "progress_text", "render_status", "status_line",
]
