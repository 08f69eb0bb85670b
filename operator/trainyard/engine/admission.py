"""Admission by a queue (Kueue): what the engine needs to know of a job's Workload. The Kubernetes
driver reads it from the Workload object and its ResourceFlavors; the engine only decides with it
(hold the workers, start them where the queue placed them, stop them when evicted)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Placement:
    """Where an admitted gang runs: the flavours' node labels and tolerations (Kueue's
    podset.FromAssignment), added to every worker pod."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Admission:
    """The state of a queued job's Workload."""

    queue: str  # the LocalQueue (the kueue.x-k8s.io/queue-name label)
    admitted: bool = False  # quota reserved and admitted: the workers may run
    cluster_queue: str = ""
    placement: Placement = field(default_factory=Placement)
    # Kueue evicted it (Preempted, PodsReadyTimeout, Deactivated, ...): the workers must stop; the
    # quota is released once none is active, and the job queues again
    evicted: str = ""
    message: str = ""  # Kueue's words: why it waits, or why it was evicted
    unavailable: bool = False  # Kueue's API is not served: the job waits rather than run outside its queue
