"""`trainyard submit|get|describe|logs|delete|suspend|resume`: jobs on a cluster, through the SDK.

Registered on the `trainyard` app by importing this module (cli.py does). Nothing here imports the
kubernetes library at import time: `trainyard operator` sets KUBECONFIG before that import.

Every failure is one line on stderr ("error: ..."), never a traceback, with these exit codes:
0 ok; 1 the job Failed (submit --wait), logs unavailable, or another apiserver error; 2 invalid
input (a missing file, bad YAML, not a DistributedTrainingJob, a spec the apiserver refused);
3 no usable cluster (no kubeconfig, unreachable, credentials refused, the CRD not installed);
4 not found (the job or the namespace); 124 --wait --timeout ran out; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from .cli import app

Kubeconfig = Annotated[Path | None, typer.Option(
    "--kubeconfig", help="Kubeconfig file (default $KUBECONFIG, else ~/.kube/config).", show_default=False)]
Context = Annotated[str | None, typer.Option(
    "--context", help="Kubeconfig context (default its current-context).", show_default=False)]
Namespace = Annotated[str | None, typer.Option(
    "--namespace", "-n", help="Namespace (default the context's namespace, else 'default').", show_default=False)]

OUTPUTS = ("json", "yaml", "wide", "name")


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turns every failure into one line on stderr and an exit code (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .sdk import TrainyardError

        try:
            return fn(*args, **kwargs)
        except TrainyardError as e:
            _fail(str(e), e.exit_code)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:  # `trainyard logs x | head`
            with contextlib.suppress(Exception):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as e:
            if os.environ.get("TRAINYARD_DEBUG"):
                raise
            _fail(f"unexpected {type(e).__name__}: {e} (set TRAINYARD_DEBUG=1 for the traceback)", 1)

    return wrapper


def _client(kubeconfig: Path | None, context: str | None, namespace: str | None):
    from .sdk import TrainyardClient

    return TrainyardClient(kubeconfig, context, namespace)


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


# ------------------------------------------------------------------------------------------ submit


@app.command()
@_one_line_errors
def submit(
    file: Annotated[Path | None, typer.Argument(help="A DistributedTrainingJob YAML.", show_default=False)] = None,
    filename: Annotated[Path | None, typer.Option("--filename", "-f", help="Same as FILE.", show_default=False)] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Show the job's status until it ends: exit 0 if Succeeded, 1 if Failed.")] = False,
    timeout: Annotated[float | None, typer.Option(
        help="With --wait: give up after this many seconds (exit 124).", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Override spec.workers.",
                                                show_default=False)] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Create a DistributedTrainingJob from a YAML file (like kubectl create -f)."""
    from .sdk import Job, StatusView

    if (file is None) == (filename is None):
        _fail("give the job's YAML file once: trainyard submit FILE (or -f FILE)", 2)
    path = file or filename
    assert path is not None
    job = Job.from_yaml(path)
    if workers is not None:
        job.spec.workers = workers
    c = _client(kubeconfig, context, namespace)
    name = c.submit(job)
    ns = namespace or job.metadata.namespace or c.namespace
    typer.echo(f"{name} created in namespace {ns}")
    if not wait:
        return
    st = c.wait(name, timeout=timeout, namespace=ns, view=StatusView.auto("lines", stream=sys.stdout))
    phase = st.phase.value if st.phase else "-"
    typer.echo(f"{name}: {phase} after {st.restarts} restart(s), {st.disruptions} disruption(s), "
               f"attempt {st.attempt}: {st.message or ''}".rstrip(": "))
    raise typer.Exit(0 if phase == "Succeeded" else 1)


# --------------------------------------------------------------------------------------------- get


def job_rows(objs: list[dict[str, Any]], last: dict[str, Any], all_namespaces: bool, wide: bool) -> tuple[
        list[str], list[list[str]]]:
    from .sdk import age

    headers = ["NAME", "PHASE", "READY", "DESIRED", "RESTARTS", "AGE", "ATTEMPT", "LAST EVENT"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers += ["DISRUPTIONS", "MESSAGE"]
    rows = []
    for o in objs:
        meta, st = o["metadata"], o.get("status") or {}
        w = st.get("workers") or {}
        ev = last.get(meta.get("uid", ""))
        row = [meta["name"], _dash(st.get("phase")), str(w.get("ready", 0)), str(w.get("desired", 0)),
               str(st.get("restarts", 0)), age(meta.get("creationTimestamp")), str(st.get("attempt", 0)),
               _short(f"{ev.reason}: {ev.message}") if ev else "-"]
        if all_namespaces:
            row.insert(0, meta.get("namespace", ""))
        if wide:
            row += [str(st.get("disruptions", 0)), _dash(st.get("message"))]
        rows.append(row)
    return headers, rows


@app.command()
@_one_line_errors
def get(
    name: Annotated[str | None, typer.Argument(help="A job; all jobs of the namespace when omitted.",
                                               show_default=False)] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Jobs of every namespace.")] = False,
    output: Annotated[str | None, typer.Option("--output", "-o", help="json, yaml, wide or name.",
                                               show_default=False)] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """List jobs: phase, ready/desired workers, restarts, age, attempt and the last event."""
    import yaml

    if output is not None and output not in OUTPUTS:
        _fail(f"--output {output!r}: expected one of {', '.join(OUTPUTS)}", 2)
    if name and all_namespaces:
        _fail("a job cannot be named across all namespaces: drop -A or the name", 2)
    c = _client(kubeconfig, context, namespace)
    objs = [c.get_raw(name)] if name else c.list_raw(all_namespaces=all_namespaces)
    if output in ("json", "yaml"):
        doc: Any = objs[0] if name else {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": objs}
        typer.echo(json.dumps(doc, indent=2) if output == "json" else yaml.safe_dump(doc, sort_keys=False), nl=output == "json")
        return
    if not objs:
        where = "any namespace" if all_namespaces else f"namespace {c.namespace}"
        typer.echo(f"No jobs found in {where}.", err=True)
        return
    if output == "name":
        for o in objs:
            typer.echo(f"{c.resource.plural}.{c.resource.group}/{o['metadata']['name']}")
        return
    last = c.last_events(all_namespaces=all_namespaces)
    headers, rows = job_rows(objs, last, all_namespaces, wide=output == "wide")
    typer.echo(table(headers, rows))


# ---------------------------------------------------------------------------------------- describe


def describe_text(obj: dict[str, Any], workers: list[Any], events: list[Any]) -> str:
    from . import api
    from .sdk import age

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


@app.command()
@_one_line_errors
def describe(
    name: Annotated[str, typer.Argument(help="The job.", show_default=False)],
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Show a job: spec summary, conditions, the pods of every attempt and the events."""
    c = _client(kubeconfig, context, namespace)
    obj = c.get_raw(name)
    uid = obj["metadata"].get("uid")
    typer.echo(describe_text(obj, c.workers(name, uid=uid), c.events(name, uid=uid)))


# -------------------------------------------------------------------------------------------- logs


@app.command()
@_one_line_errors
def logs(
    name: Annotated[str, typer.Argument(help="The job.", show_default=False)],
    worker: Annotated[int | None, typer.Option("--worker", "-w", help="Only this worker index.",
                                               show_default=False)] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new lines until the job ends.")] = False,
    previous_attempt: Annotated[bool, typer.Option(
        "--previous-attempt", help="The newest earlier attempt that still has pods.")] = False,
    attempt: Annotated[int | None, typer.Option("--attempt", help="The pods of this attempt.",
                                                show_default=False)] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Print the trainer logs of a job's workers, each line prefixed "w<index>|"."""
    from .sdk import _logs_failure

    if previous_attempt and attempt is not None:
        _fail("--previous-attempt and --attempt exclude each other", 2)
    c = _client(kubeconfig, context, namespace)
    obj = c.get_raw(name)
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    most = max((st.get("workers") or {}).get("desired", 0), spec.get("workers") or 0,
               (spec.get("elastic") or {}).get("maxWorkers", 0), 1)
    width = len(f"w{most - 1}")
    produced, pending = False, []
    out = sys.stdout
    for item in c.log_events(name, worker, follow, attempt=attempt, previous_attempt=previous_attempt):
        if item.notice:
            typer.echo(f"-- {item.notice}", err=True)
        elif item.error is not None:
            if produced:
                typer.echo(f"warning: worker {item.worker}: {item.error}", err=True)
            else:
                pending.append((item.worker, item.error))
        elif item.line is not None:
            if not produced:
                produced = True
                for w, err in pending:
                    typer.echo(f"warning: worker {w}: {err}", err=True)
            out.write(f"{f'w{item.worker}':<{width}}| {item.line}\n")
            if follow:
                out.flush()
    if pending and not produced:
        _fail(_logs_failure(name, pending), 1)


# ------------------------------------------------------------------------------ delete and suspend


@app.command()
@_one_line_errors
def delete(
    name: Annotated[str, typer.Argument(help="The job.", show_default=False)],
    wait: Annotated[bool, typer.Option("--wait", help="Return once the job is gone.")] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Delete a job; its pods, Service and created claim go with it."""
    c = _client(kubeconfig, context, namespace)
    c.delete(name, wait=wait)
    typer.echo(f"{name} deleted from namespace {c.namespace}")


@app.command()
@_one_line_errors
def suspend(
    name: Annotated[str, typer.Argument(help="The job.", show_default=False)],
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Suspend a job (spec.runPolicy.suspend=true): its workers are deleted, its phase becomes Suspended."""
    c = _client(kubeconfig, context, namespace)
    c.suspend(name)
    typer.echo(f"{name} suspended")


@app.command()
@_one_line_errors
def resume(
    name: Annotated[str, typer.Argument(help="The job.", show_default=False)],
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Resume a suspended job: a new attempt starts, not counted as a restart."""
    c = _client(kubeconfig, context, namespace)
    c.resume(name)
    typer.echo(f"{name} resumed")
