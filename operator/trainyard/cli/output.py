"""How the CLI lays out jobs: kubectl-style tables and `describe` text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import api


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> str:
    """kubectl's layout: left-aligned columns, three spaces apart, no trailing blanks."""
    cells = [[str(c) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join((indent + "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()
                     for r in cells)


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def job_rows(objs: list[dict[str, Any]], last: dict[str, Any], all_namespaces: bool, wide: bool) -> tuple[
        list[str], list[list[str]]]:
    from ..sdk import age  # not at import: `trainyard operator` sets KUBECONFIG before kubernetes is imported

    headers = ["NAME", "PHASE", "READY", "DESIRED", "RESTARTS", "STEP", "%", "ETA", "AGE", "ATTEMPT", "LAST EVENT"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers += ["LOSS", "LAST-CKPT", "DISRUPTIONS", "MESSAGE"]
    rows = []
    for o in objs:
        meta, st = o["metadata"], o.get("status") or {}
        w = st.get("workers") or {}
        p = st.get("progress") or {}
        ev = last.get(meta.get("uid", ""))
        row = [meta["name"], _dash(st.get("phase")), str(w.get("ready", 0)), str(w.get("desired", 0)),
               str(st.get("restarts", 0)), _dash(p.get("step")), _dash(p.get("percent")), _dash(p.get("eta")),
               age(meta.get("creationTimestamp")), str(st.get("attempt", 0)),
               _short(f"{ev.reason}: {ev.message}") if ev else "-"]
        if all_namespaces:
            row.insert(0, meta.get("namespace", ""))
        if wide:
            row += [_dash(p.get("loss")), _dash(p.get("lastCheckpointStep")), str(st.get("disruptions", 0)),
                    _dash(st.get("message"))]
        rows.append(row)
    return headers, rows


def describe_text(obj: dict[str, Any], workers: list[Any], events: list[Any]) -> str:
    from ..sdk import age

    meta, st = obj["metadata"], obj.get("status") or {}
    spec_raw = obj.get("spec") or {}
    out: list[str] = []

    def field(label: str, value: Any, indent: str = "") -> None:
        out.append(f"{indent}{label + ':':<{20 - len(indent)}}{_dash(value)}")

    def when(ts: Any) -> str | None:
        return f"{ts} ({age(ts)} ago)" if ts else None

    field("Name", meta["name"])
    field("Namespace", meta.get("namespace"))
    field("UID", meta.get("uid"))
    field("Created", when(meta.get("creationTimestamp")))
    labels = meta.get("labels") or {}
    field("Labels", ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or None)
    field("Phase", st.get("phase"))
    field("Message", st.get("message"))
    w = st.get("workers") or {}
    field("Worker pods", f"desired {w.get('desired', 0)}, active {w.get('active', 0)}, ready {w.get('ready', 0)}, "
                     f"succeeded {w.get('succeeded', 0)}, failed {w.get('failed', 0)}")
    field("Attempt", f"{st.get('attempt', 0)} (rendezvous attempt {st.get('rendezvousAttempt', 0)})")
    try:
        spec = api.DistributedTrainingJobSpec.model_validate(spec_raw)
    except Exception:
        spec = None
    limit = f" of backoffLimit {spec.failure_policy.backoff_limit}" if spec else ""
    field("Restarts", f"{st.get('restarts', 0)}{limit} (disruptions {st.get('disruptions', 0)}, never counted)")
    from ..sdk import progress_line

    line = progress_line(obj)
    if line is not None:
        reported = (st.get("progress") or {}).get("updatedAt")
        field("Progress", line + (f" (reported {age(reported)} ago)" if reported else ""))
    field("Started", when(st.get("startTime")))
    field("Completed", when(st.get("completionTime")))
    if st.get("backoffUntil"):
        field("Backoff until", st["backoffUntil"])
    out.append("Spec:")
    if spec is None:
        out.append("  (does not match this Trainyard's API; see -o yaml)")
    else:
        trainer = api.trainer_container(spec.template) or {}
        field("Workers", spec.desired_workers, "  ")
        if spec.elastic:
            field("Elastic", f"{spec.elastic.min_workers}..{spec.elastic.max_workers} workers", "  ")
        field("Procs per worker", spec.procs_per_worker, "  ")
        field("Image", trainer.get("image"), "  ")
        argv = [*(trainer.get("command") or []), *(trainer.get("args") or [])]
        field("Command", " ".join(str(a) for a in argv) or None, "  ")
        rdzv = spec.rendezvous
        field("Rendezvous", f"c10d, port {rdzv.port}, join timeout {rdzv.join_timeout_seconds}s", "  ")
        ck = spec.checkpoint
        if ck is None:
            field("Checkpoint", None, "  ")
        elif ck.claim_name:
            field("Checkpoint", f"existing claim {ck.claim_name} at {ck.mount_path}", "  ")
        else:
            modes = ",".join(ck.access_modes or ["ReadWriteMany"])
            kept = ", retained" if ck.retain else ""
            field("Checkpoint", f"claim {meta['name']}-checkpoints ({ck.size}, {modes}{kept}) at {ck.mount_path}",
                  "  ")
        fp = spec.failure_policy
        codes = f" {fp.retryable_exit_codes}" if fp.retryable_exit_codes else ""
        field("Failure policy", f"{fp.restart_policy.value}{codes}, scope {fp.restart_scope.value}, backoffLimit "
                                f"{fp.backoff_limit}, backoff {fp.backoff_seconds}s (max {fp.max_backoff_seconds}s)"
                                f", in-place restarts {fp.in_place_restarts}", "  ")
        rp = spec.run_policy

        def secs(v: int | None) -> str:
            return f"{v}s" if v is not None else "-"

        field("Run policy", f"suspend {str(rp.suspend).lower()}, cleanPodPolicy {rp.clean_pod_policy.value}, "
                            f"activeDeadline {secs(rp.active_deadline_seconds)}, ttlAfterFinished "
                            f"{secs(rp.ttl_seconds_after_finished)}, startupDeadline "
                            f"{secs(rp.startup_deadline_seconds)}, progressDeadline "
                            f"{secs(rp.progress_deadline_seconds)}", "  ")
    conds = st.get("conditions") or []
    out.append("Conditions:")
    if conds:
        out.append(table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
                         [[c.get("type", ""), c.get("status", ""), _dash(c.get("reason")),
                           age(c.get("lastTransitionTime")), _dash(c.get("message"))] for c in conds], "  "))
    else:
        out.append("  <none>")
    out.append("Workers:")
    if workers:
        out.append(table(["NAME", "ATTEMPT", "INDEX", "PHASE", "EXIT CODE", "REASON", "NODE", "AGE"],
                         [[p.name, p.attempt, p.index, p.phase + (" (deleting)" if p.deleting else ""),
                           _dash(p.exit_code), _dash(p.reason), _dash(p.node), age(p.created)] for p in workers],
                         "  "))
    else:
        out.append("  <none>")
    out.append("Events:")
    if events:
        out.append(table(["TYPE", "REASON", "AGE", "MESSAGE"],
                         [[e.type, e.reason, age(e.time) + (f" (x{e.count})" if e.count > 1 else ""), e.message]
                          for e in events], "  "))
    else:
        out.append("  <none>")
    return "\n".join(out)
