"""Kueue, route A (e2e/kueue/README.md): the operator makes one Workload per queued job
(`kueue.x-k8s.io/queue-name`), Kueue admits it, and the operator does a job controller's part of
Kueue's contract: no pod before admission, the flavours' placement on every pod, PodsReady,
releasing the quota after an eviction once no worker is active, Finished when the job ends.

Kueue itself never sees the pods (its Configuration lists the DTJ under
integrations.externalFrameworks), so a gang restart is invisible to it: the admission stays.

Pure functions here (the Workload's manifest is in manifests.py); the backend does the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import api
from ..engine.admission import Admission, Placement

GROUP, VERSION, PLURAL = "kueue.x-k8s.io", "v1beta2", "workloads"
API_VERSION = f"{GROUP}/{VERSION}"
PODSET = "workers"
# Conditions this operator owns on a Workload (server-side applied as FIELD_MANAGER); every apply
# carries all of them, since an apply drops what the manager applied before and omits now.
PODS_READY, FINISHED = "PodsReady", "Finished"


@dataclass(frozen=True)
class WorkloadState:
    """What the operator needs of a Workload (the kopf index holds one per job)."""

    name: str
    namespace: str
    owner_uid: str
    resource_version: str
    generation: int
    active: bool
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)  # by type
    admission: dict[str, Any] | None = None
    admission_checks: list[dict[str, Any]] = field(default_factory=list)

    def condition(self, type_: str) -> dict[str, Any] | None:
        return self.conditions.get(type_)

    def true(self, type_: str) -> bool:
        return (self.conditions.get(type_) or {}).get("status") == "True"

    @property
    def admitted(self) -> bool:
        return self.true("Admitted") and self.admission is not None

    @property
    def reserved(self) -> bool:
        return self.true("QuotaReserved") or self.admission is not None

    @property
    def evicted(self) -> str:
        """Kueue's eviction reason while the eviction is in force (the quota not yet released)."""
        c = self.conditions.get("Evicted")
        return (c.get("reason") or "Evicted") if c and c.get("status") == "True" and self.reserved else ""

    def flavors(self) -> list[str]:
        psa = self._assignment()
        return sorted(set((psa.get("flavors") or {}).values())) if psa else []

    def _assignment(self) -> dict[str, Any] | None:
        for psa in (self.admission or {}).get("podSetAssignments") or []:
            if psa.get("name") == PODSET:
                return psa
        return None


def workload_state(body: dict[str, Any]) -> WorkloadState:
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    owner = next((o.get("uid", "") for o in meta.get("ownerReferences") or [] if o.get("controller")), "")
    return WorkloadState(
        name=meta.get("name", ""), namespace=meta.get("namespace", ""), owner_uid=owner,
        resource_version=meta.get("resourceVersion", ""), generation=int(meta.get("generation") or 1),
        active=(body.get("spec") or {}).get("active", True) is not False,
        conditions={c["type"]: dict(c) for c in status.get("conditions") or [] if c.get("type")},
        admission=status.get("admission"), admission_checks=list(status.get("admissionChecks") or []))


def placement(wl: WorkloadState, flavors: dict[str, dict[str, Any]]) -> Placement:
    """Kueue's podset.FromAssignment: every assigned flavour's nodeLabels and tolerations, then the
    admission checks' podSetUpdates for the pod set. `flavors`: ResourceFlavor specs by name."""
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    for name in wl.flavors():
        spec = flavors.get(name) or {}
        node_selector.update(spec.get("nodeLabels") or {})
        tolerations += [t for t in spec.get("tolerations") or [] if t not in tolerations]
    for check in wl.admission_checks:
        for update in check.get("podSetUpdates") or []:
            if update.get("name") == PODSET:
                node_selector.update(update.get("nodeSelector") or {})
                tolerations += [t for t in update.get("tolerations") or [] if t not in tolerations]
    return Placement(node_selector, tolerations)


def admission(queue: str, wl: WorkloadState | None, flavors: dict[str, dict[str, Any]] | None,
              available: bool) -> Admission:
    """The engine's view of a queued job's Workload (None: not created yet)."""
    if not available:
        return Admission(queue, unavailable=True)
    if wl is None:
        return Admission(queue, message="its Workload is being created")
    cq = (wl.admission or {}).get("clusterQueue", "")
    if wl.evicted:
        ev = wl.condition("Evicted") or {}
        return Admission(queue, cluster_queue=cq, evicted=wl.evicted, message=ev.get("message", ""))
    if wl.admitted and flavors is not None:
        return Admission(queue, admitted=True, cluster_queue=cq, placement=placement(wl, flavors))
    waiting = (wl.condition("QuotaReserved") or {}).get("message", "")
    return Admission(queue, message=waiting if not wl.true("QuotaReserved") else "quota reserved, admission checks pending")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(wl: WorkloadState, type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    old = wl.condition(type_)
    same = old is not None and old.get("status") == status
    return {"type": type_, "status": status, "reason": reason, "message": message[:32768],
            "lastTransitionTime": old.get("lastTransitionTime") if same and old.get("lastTransitionTime") else _now(),
            "observedGeneration": wl.generation}


def owned_conditions(wl: WorkloadState, status: api.DistributedTrainingJobStatus) -> list[dict[str, Any]] | None:
    """The conditions this operator owns on an admitted (or finished) Workload, given the job's
    status; None when they already say so (no write)."""
    phase = status.phase
    ready = wl.condition(PODS_READY) or {}
    if phase == api.Phase.RUNNING:
        was_down = ready.get("reason") in ("WaitForRecovery", "Recovered")
        want = ("True", "Recovered" if was_down else "Started", "all workers are running")
    elif phase == api.Phase.RESTARTING:
        want = ("False", "WaitForRecovery", status.message or "the gang is restarting")
    else:
        want = ("False", "WaitForStart", status.message or "waiting for the workers to start")
    if phase is not None and phase.terminal:
        # PodsReady as it was (the workers were running when they ended), Finished with the outcome.
        want = (ready.get("status") or "False", ready.get("reason") or "WaitForStart", ready.get("message") or "")
    out = [_condition(wl, PODS_READY, *want)]
    if phase is not None and phase.terminal:
        out.append(_condition(wl, FINISHED, "True", "Succeeded" if phase == api.Phase.SUCCEEDED else "Failed",
                              status.message or phase.value))
    current = [{k: c.get(k) for k in ("type", "status", "reason")} for c in
               (wl.condition(t) for t in (PODS_READY, FINISHED)) if c]
    if current == [{k: c[k] for k in ("type", "status", "reason")} for c in out]:
        return None
    return out


def apply_body(wl: WorkloadState, conditions: list[dict[str, Any]]) -> dict[str, Any]:
    """The server-side apply of our conditions on workloads/status (a listType=map by type:
    Kueue's own conditions are untouched)."""
    return {"apiVersion": API_VERSION, "kind": "Workload", "metadata": {"name": wl.name, "namespace": wl.namespace},
            "status": {"conditions": conditions}}


def release_body(wl: WorkloadState) -> dict[str, Any]:
    """Clears an evicted Workload's reservation, as Kueue's job reconciler does for its own jobs
    (workload.UnsetQuotaReservationWithCondition + SetRequeuedCondition): a merge patch guarded by
    the resourceVersion, conditions sent whole (a merge patch replaces lists). Without `Requeued`
    changing, Kueue leaves the Workload in its inadmissible list; without PodsReady reset to
    WaitForStart, a stale transition time gets it evicted again right after re-admission."""
    now = _now()
    ev = wl.condition("Evicted") or {}
    conditions = []
    for type_, c in wl.conditions.items():
        c = dict(c)
        if type_ == "QuotaReserved" and c.get("status") == "True":
            c.update(status="False", reason="Pending", message=ev.get("message") or "evicted", lastTransitionTime=now)
        elif type_ == "Admitted" and c.get("status") == "True":
            c.update(status="False", reason="NoReservation", message="The workload has no reservation",
                     lastTransitionTime=now)
        elif type_ in ("Requeued", PODS_READY):
            continue
        conditions.append(c)
    requeued = "True" if ev.get("reason") in ("Preempted", "NodeFailures") else "False"
    old = wl.condition("Requeued") or {}
    conditions.append({"type": "Requeued", "status": requeued, "reason": ev.get("reason") or "Evicted",
                       "message": ev.get("message") or "evicted",
                       "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == requeued else now,
                       "observedGeneration": wl.generation})
    # A fresh transition time: Kueue's waitForPodsReady timer runs from it after re-admission.
    conditions.append({**_condition(wl, PODS_READY, "False", "WaitForStart", "evicted: waiting to be admitted again"),
                       "lastTransitionTime": now})
    return {"metadata": {"resourceVersion": wl.resource_version}, "status": {"admission": None, "conditions": conditions}}
