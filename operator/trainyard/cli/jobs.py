"""`trainyard submit|get|describe|logs|delete|suspend|resume`: jobs on a cluster, through the SDK.

Registered on the `trainyard` app by cli/app.py. Nothing here imports the kubernetes library at
import time: `trainyard operator` sets KUBECONFIG before that import.

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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from .output import describe_text, job_rows, table

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
        from ..sdk import TrainyardError

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
    from ..sdk import TrainyardClient

    return TrainyardClient(kubeconfig, context, namespace)


# ------------------------------------------------------------------------------------------ submit


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
    from ..sdk import Job, StatusView

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
    if previous_attempt and attempt is not None:
        _fail("--previous-attempt and --attempt exclude each other", 2)
    c = _client(kubeconfig, context, namespace)
    obj = c.get_raw(name)
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    most = max((st.get("workers") or {}).get("desired", 0), spec.get("workers") or 0,
               (spec.get("elastic") or {}).get("maxWorkers", 0), 1)
    width = len(f"w{most - 1}")
    out = sys.stdout
    for item in c.log_stream(name, worker, follow, attempt=attempt, previous_attempt=previous_attempt):
        if item.empty:  # every log was empty: say what the workers are doing instead of printing nothing
            typer.echo(item.notice, err=True)
        elif item.notice:
            typer.echo(f"-- {item.notice}", err=True)
        elif item.error is not None:
            typer.echo(f"warning: worker {item.worker}: {item.error}", err=True)
        elif item.line is not None:
            out.write(f"{f'w{item.worker}':<{width}}| {item.line}\n")
            if follow:
                out.flush()


# ------------------------------------------------------------------------------ delete and suspend


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
