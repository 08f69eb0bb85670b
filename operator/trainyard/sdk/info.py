"""What the SDK reads besides jobs: worker pods and events, as `describe` shows them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from .. import api
from ..api.progress import human_duration
from ..kube.pods import from_pod

# Turns the client's model objects back into the JSON the apiserver sent (for kube.pods.from_pod).
_SERIALIZER = client.ApiClient()


@dataclass(frozen=True)
class WorkerInfo:
    """A worker pod (of any attempt) as `describe` shows it."""

    name: str
    attempt: int
    index: int
    phase: str
    exit_code: int | None = None
    reason: str = ""
    node: str = ""
    created: datetime | None = None
    deleting: bool = False
    waiting: str = ""  # the trainer container's waiting reason (ContainerCreating, ImagePullBackOff...)

    @classmethod
    def from_pod(cls, pod: client.V1Pod | dict[str, Any]) -> WorkerInfo | None:
        body = pod if isinstance(pod, dict) else _SERIALIZER.sanitize_for_serialization(pod)
        worker = from_pod(body)
        if worker is None:
            return None
        meta, status, spec = body.get("metadata") or {}, body.get("status") or {}, body.get("spec") or {}
        trainer = next((c for c in status.get("containerStatuses") or [] if c.get("name") == api.TRAINER_CONTAINER),
                       {})
        waiting = ((trainer.get("state") or {}).get("waiting") or {}).get("reason") or ""
        return cls(worker.name, worker.attempt, worker.index, status.get("phase") or "Pending", worker.exit_code,
                   worker.reason or status.get("reason") or "", spec.get("nodeName") or "", worker.created_at,
                   meta.get("deletionTimestamp") is not None, waiting)

    @property
    def state(self) -> str:
        """"Pending (ContainerCreating)", "Running", "Failed (Error)": what the pod is doing."""
        if self.deleting:
            return f"{self.phase}, being deleted"
        detail = self.reason or self.waiting
        return f"{self.phase} ({detail})" if detail else self.phase


@dataclass(frozen=True)
class EventInfo:
    type: str
    reason: str
    message: str
    time: datetime | None
    count: int = 1
    order: int = 0  # resourceVersion: orders events posted within the same second


@dataclass(frozen=True)
class Resource:
    """The API resource the client talks to. Only tests and forks change it."""

    group: str = api.GROUP
    version: str = api.VERSION
    plural: str = api.PLURAL
    kind: str = api.KIND

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}"


DTJ = Resource()
# A followed log may stay silent for a long time (data loading, a long epoch); the client wants a number.
FOLLOW_READ_TIMEOUT = 30 * 86400


def human_age(seconds: float) -> str:
    """kubectl's duration format (k8s.io/apimachinery/pkg/util/duration.HumanDuration)."""
    return human_duration(seconds)


def age(ts: datetime | str | None, now: datetime | None = None) -> str:
    if ts is None:
        return "-"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return human_age(((now or datetime.now(UTC)) - ts).total_seconds())


