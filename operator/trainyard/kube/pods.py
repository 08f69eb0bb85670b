"""Pods as the engine sees them: the one pod -> Worker function (the operator's index and the
SDK both use it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from ..api import contract, reasons
from ..api.names import LABEL_ATTEMPT, LABEL_WORKER_INDEX
from ..api.template import TRAINER_CONTAINER
from ..engine.workers import State, Worker

# pod.status.reason values the kubelet or the node lifecycle set when the pod was not at fault
_DISRUPTION_POD_REASONS = {
    "Evicted": reasons.EVICTED,
    "Preempting": reasons.EVICTED,
    "NodeLost": reasons.NODE_LOST,
    "NodeShutdown": reasons.NODE_LOST,
    "Shutdown": reasons.NODE_LOST,
    "Terminated": reasons.NODE_LOST,
    "UnexpectedAdmissionError": reasons.NODE_LOST,
}
_DISRUPTION_CONDITION_REASONS = {
    "DeletionByTaintManager": reasons.NODE_LOST,
    "DeletionByPodGC": reasons.NODE_LOST,
    "TerminationByKubelet": reasons.NODE_LOST,
}




# What from_pod reads of a pod's spec: the watch keeps only this (lean_pod).
POD_SPEC_READ = ("nodeName",)


def lean_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as the operator holds it, in place: no managedFields and of the spec only what
    from_pod reads. A worker pod is 32 KB parsed, 5.5 KB lean; kopf holds every listed pod's
    body until all are indexed, so an operator restart with 40,000 pods held 2.4 GB."""
    lean_meta(pod)
    spec = pod.get("spec")
    if isinstance(spec, dict):
        pod["spec"] = {k: spec[k] for k in POD_SPEC_READ if k in spec}
    return pod


def lean_meta(obj: dict[str, Any]) -> dict[str, Any]:
    """Any watched object, in place, without its managedFields (the apiserver's field ownership,
    which nothing in the operator reads: about half of a pod's parsed body)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def _ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def from_pod(pod: dict[str, Any], trainer: str = TRAINER_CONTAINER) -> Worker | None:
    """A Worker from a pod manifest, or None if the pod is not a Trainyard worker."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    try:
        index = int(labels[LABEL_WORKER_INDEX])
        attempt = int(labels[LABEL_ATTEMPT])
    except (KeyError, TypeError, ValueError):
        return None
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    cstatuses = status.get("containerStatuses") or []
    trainer_status = next((c for c in cstatuses if c.get("name") == trainer), None)
    state = (trainer_status or {}).get("state") or {}
    terminated = state.get("terminated")
    base = Worker(
        name=meta.get("name", ""),
        index=index,
        attempt=attempt,
        state=State.PENDING,
        created_at=_ts(meta.get("creationTimestamp")),
        started_at=_ts((state.get("running") or terminated or {}).get("startedAt")),
        node=(pod.get("spec") or {}).get("nodeName") or "",
        address=status.get("podIP") or "",
    )

    disruption = _DISRUPTION_POD_REASONS.get(status.get("reason") or "")
    target = conditions.get("DisruptionTarget")
    if disruption is None and target and target.get("status") == "True":
        disruption = _DISRUPTION_CONDITION_REASONS.get(target.get("reason") or "", reasons.EVICTED)
    if disruption is None and meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        # The operator never deletes a worker of the current attempt, so someone else did.
        disruption = reasons.POD_DELETED
    if disruption:
        return replace(
            base, state=State.FAILED, disruption=disruption, reason=disruption,
            message=status.get("message") or (target or {}).get("message") or f"pod {base.name}: {disruption}",
            finished_at=_ts((terminated or {}).get("finishedAt")),
        )

    # A trainer that has exited decides the worker's fate even if a sidecar keeps the pod Running.
    if terminated is not None or phase in ("Succeeded", "Failed"):
        code = (terminated or {}).get("exitCode")
        if code is None and phase == "Succeeded":
            code = 0
        if code == 0:
            return replace(base, state=State.SUCCEEDED, exit_code=0, reason=(terminated or {}).get("reason") or "",
                           finished_at=_ts((terminated or {}).get("finishedAt")))
        # The kubelet says OOMKilled for a cgroup OOM kill; a bare 137 is a SIGKILL (kill -9, a
        # preStop), which is a signal like any other, not a memory problem.
        oom = (terminated or {}).get("reason") == "OOMKilled"
        hung = code == contract.HUNG_EXIT_CODE
        return replace(
            base, state=State.FAILED, exit_code=code, oom=oom, hung=hung,
            reason=(terminated or {}).get("reason") or status.get("reason") or "Error",
            message=(terminated or {}).get("message") or status.get("message") or "",
            finished_at=_ts((terminated or {}).get("finishedAt")),
        )

    if phase == "Running":
        ready = (conditions.get("Ready") or {}).get("status") == "True"
        return replace(base, state=State.RUNNING, ready=ready)

    scheduled = conditions.get("PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return replace(base, reason=reasons.UNSCHEDULABLE, message=scheduled.get("message") or "")
    for cs in cstatuses + (status.get("initContainerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in reasons.STUCK_REASONS:
            return replace(base, reason=waiting["reason"], message=waiting.get("message") or "")
    return base
