"""What the SDK reads besides jobs: worker pods and events, as `describe` shows them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from .. import api
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
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(ts: datetime | str | None, now: datetime | None = None) -> str:
    if ts is None:
        return "-"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return human_age(((now or datetime.now(UTC)) - ts).total_seconds())


