"""Every failure of the SDK is a `TrainyardError` with a one-line message and the exit code the
CLI uses: 1 a failure, 2 invalid input, 3 no usable cluster, 4 not found, 124 a wait timed out."""

from __future__ import annotations

from ..api import DistributedTrainingJobStatus
from ..api.errors import InvalidInput, InvalidSpec, NotADistributedTrainingJob, TrainyardError

__all__ = [
    "AccessDenied", "ApiError", "CRDNotInstalled", "ClusterUnreachable", "InvalidInput", "InvalidSpec", "JobExists",
    "JobNotFound", "LogsUnavailable", "NamespaceNotFound", "NotADistributedTrainingJob", "TrainyardError",
    "WaitTimeout",
]


class ClusterUnreachable(TrainyardError):
    """No cluster: no kubeconfig, a kubeconfig that cannot be loaded, or the apiserver cannot be reached."""

    exit_code = 3


class AccessDenied(TrainyardError):
    """The apiserver refused the credentials (401) or the request (403)."""

    exit_code = 3


class CRDNotInstalled(TrainyardError):
    """The apiserver does not serve the DistributedTrainingJob resource type (404 on the type)."""

    exit_code = 3


class JobNotFound(TrainyardError, LookupError):
    exit_code = 4


class NamespaceNotFound(TrainyardError, LookupError):
    exit_code = 4


class JobExists(TrainyardError):
    exit_code = 1


class LogsUnavailable(TrainyardError):
    """No worker log could be read (the pods are gone, not started, or the node serves no logs)."""


class WaitTimeout(TrainyardError, TimeoutError):
    """`wait` ran out of time; `status` is the last status read."""

    exit_code = 124

    def __init__(self, message: str, status: DistributedTrainingJobStatus):
        super().__init__(message)
        self.status = status


class ApiError(TrainyardError):
    """Any other error answer from the apiserver."""
