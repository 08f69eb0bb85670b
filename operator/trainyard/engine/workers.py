"""What a backend observes of one worker, independent of Kubernetes.

The Kubernetes driver turns pods into `Worker`s (`trainyard.kube.pods.from_pod`); the local
driver turns processes into them. The decision engine only ever sees `Worker`s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from ..api import contract, reasons
from ..api.progress import LauncherStart, Report
from .admission import Admission


class State(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    VANISHED = "Vanished"  # gone without the operator deleting it (force delete, node garbage collection)


@dataclass(frozen=True)
class Refusal:
    """The apiserver refused to create an object (a worker's pod, the Service, the claim)."""

    code: int  # the HTTP status: 422 Invalid, 400 BadRequest, 403 Forbidden (quota, admission), 409, 5xx
    reason: str  # the apiserver's reason: Invalid, BadRequest, Forbidden, AlreadyExists, ...
    message: str  # the apiserver's own message, which names the field or the quota
    first_at: datetime  # the first refusal in a row
    last_at: datetime  # the latest
    count: int = 1  # refusals in a row

    @property
    def permanent(self) -> bool:
        """The object itself is wrong (a field, a value): sending it again cannot help."""
        return self.code in (400, 422)


@dataclass(frozen=True)
class Worker:
    name: str
    index: int
    attempt: int
    state: State
    ready: bool = False
    exit_code: int | None = None
    oom: bool = False
    hung: bool = False
    # why it stopped (Failed) or cannot start (Pending): a pod reason, a waiting reason, Unschedulable
    reason: str = ""
    message: str = ""
    disruption: str | None = None  # Evicted, NodeLost or PodDeleted: not the workload's fault
    created_at: datetime | None = None
    # when its trainer started running (the container's startedAt, the process's start); None: unknown
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # it has reported training progress since it started; None: this backend cannot tell
    training: bool | None = None
    node: str = ""
    address: str = ""  # its network address (a pod IP), when it has one and the backend knows it
    # its node has not been Ready since then (the Kubernetes driver reads the Node)
    node_unready_since: datetime | None = None
    # False: its pod does not exist yet (the apiserver refused it, or a retry is due); then
    # `refusal` says why, when this backend knows
    exists: bool = True
    refusal: Refusal | None = None

    @property
    def active(self) -> bool:
        return self.state in (State.PENDING, State.RUNNING)

    @property
    def failed(self) -> bool:
        return self.state in (State.FAILED, State.VANISHED)

    @property
    def peer_lost(self) -> bool:
        """It failed because the gang broke (a peer died, the rendezvous failed): a consequence."""
        return self.state == State.FAILED and self.exit_code == contract.PEER_LOST_EXIT_CODE

    def vanished(self) -> Worker:
        """This worker, gone without the operator deleting it; a finished one keeps its outcome."""
        if self.state in (State.SUCCEEDED, State.FAILED):
            return self
        return replace(self, state=State.VANISHED, ready=False, disruption=reasons.POD_DELETED,
                       reason=reasons.POD_DELETED, message=f"pod {self.name} was deleted")


LEASE = "Lease"


@dataclass(frozen=True)
class Child:
    """The job's Service, checkpoint claim, progress Lease or (a queued job) Kueue Workload, as the
    backend sees it."""

    kind: str  # "Service", "PersistentVolumeClaim", LEASE or "Workload"
    name: str
    exists: bool | None = None  # None: this backend does not know
    phase: str = ""  # a claim's phase: Pending, Bound, Lost
    message: str = ""  # why a claim is not bound (the provisioner's or the binder's latest warning)
    refusal: Refusal | None = None  # the apiserver refused to create it
    admission: Admission | None = None  # a Workload's: what the queue says
    # The Lease (the local runtime: its stand-in directory): rank 0's newest progress report, and
    # the newest start of worker 0's launcher, whatever their attempts
    report: Report | None = None
    launcher: LauncherStart | None = None
