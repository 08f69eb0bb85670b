"""The job's progress Lease as the engine sees it: the one Lease -> observation function (the
operator's index and the SDK both use it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import contract
from ..api.names import LABEL_JOB_NAME
from ..api.progress import LauncherStart, Report, parse_launcher, parse_rendezvous, parse_report
from ..engine.workers import LEASE, Child


@dataclass(frozen=True)
class LeaseState:
    name: str
    report: Report | None = None  # rank 0's newest report
    launcher: LauncherStart | None = None  # worker 0's launcher's newest start
    rendezvous: tuple[int, str] | None = None  # (attempt, worker 0's pod IP) the operator published

    def child(self) -> Child:
        return Child(LEASE, self.name, exists=True, report=self.report, launcher=self.launcher)


def from_lease(lease: dict[str, Any]) -> tuple[str, str, LeaseState] | None:
    """(the job's name, the controller owner's uid, the state) of a job's Lease, or None."""
    meta = lease.get("metadata") or {}
    job = (meta.get("labels") or {}).get(LABEL_JOB_NAME)
    if not job:
        return None
    owner = next((o.get("uid", "") for o in meta.get("ownerReferences") or [] if o.get("controller")), "")
    notes = meta.get("annotations") or {}
    return job, owner, LeaseState(
        meta.get("name", ""),
        parse_report(notes.get(contract.ANNOTATION_PROGRESS)),
        parse_launcher(notes.get(contract.ANNOTATION_LAUNCHER)),
        parse_rendezvous(notes.get(contract.ANNOTATION_RENDEZVOUS)),
    )
