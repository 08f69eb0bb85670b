"""The `trainyard` command."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import typer

app = typer.Typer(help="Trainyard: distributed PyTorch training on Kubernetes.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.command()
def crd() -> None:
    """Print the DistributedTrainingJob CustomResourceDefinition."""
    from .crd import render

    typer.echo(render(), nl=False)


@app.command("operator")
def run_operator(
    namespace: list[str] = typer.Option(None, "--namespace", "-n", help="Watch only these namespaces."),
    kubeconfig: Path | None = typer.Option(None, help="Kubeconfig to use (default: in-cluster or ~/.kube/config)."),
    liveness: str | None = typer.Option(None, help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz."),
    log_format: str = typer.Option("plain", help="plain or json."),
    metrics_port: int = typer.Option(9090, help="Serve Prometheus metrics on this port (0: off)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the operator (kopf, standalone: one replica, no peering)."""
    if kubeconfig is not None:
        # Before importing kopf: the kubernetes library reads KUBECONFIG once, at import.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    import kopf

    from . import controller  # noqa: F401  (registers the handlers)
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
        log_prefix=True,
    )
    logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
    memo = kopf.Memo(kubeconfig=str(kubeconfig) if kubeconfig else None, metrics_port=metrics_port)
    asyncio.run(kopf.operator(
        standalone=True,
        clusterwide=not namespace,
        namespaces=namespace or [],
        memo=memo,
        liveness_endpoint=liveness,
    ))


@app.command()
def run(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A DistributedTrainingJob YAML."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Override spec.workers."),
    checkpoint_dir: Path | None = typer.Option(None, help="The checkpoint volume (default .trainyard/<job>/checkpoints)."),
    workdir: Path | None = typer.Option(None, help="Logs and heartbeats (default .trainyard/<job>)."),
    inject_failure: str | None = typer.Option(
        None, help="Kill a worker on purpose: worker=1,after=30s or worker=1,at-step=40 [,signal=KILL]."),
) -> None:
    """Run the job on this machine as local processes, with the operator's decision engine."""
    import signal as _signal

    from rich.console import Console

    from .local import Injection, Runner, load_job
    from .localview import View

    console = Console(soft_wrap=True)
    try:
        job = load_job(file, workers)
        injection = Injection.parse(inject_failure) if inject_failure else None
    except (ValueError, KeyError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    except Exception as e:  # pydantic's ValidationError, a YAML error: one line, never a traceback
        console.print(f"[red]error:[/] {file}: {e}".splitlines()[0] if not hasattr(e, "errors") else
                      f"[red]error:[/] {file}: " + "; ".join(
                          f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()))
        raise typer.Exit(2) from None
    base = workdir or Path(".trainyard") / job.metadata.name
    ckpt = checkpoint_dir or base / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    view = View(console)
    runner = Runner(job, base.resolve(), ckpt.resolve(), injection, on_event=view.event, on_line=view.line)
    _signal.signal(_signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        result = view.run(runner)
    except KeyboardInterrupt:
        console.print("interrupted: every worker stopped")
        raise typer.Exit(130) from None
    st = result.job.status
    console.print(f"{result.job.metadata.name}: {st.phase.value if st.phase else '-'} after {st.restarts} restart(s), "
                  f"{st.disruptions} disruption(s), attempt {st.attempt}: {st.message}", markup=False)
    if result.final:
        console.print(f"final: {result.final}", markup=False)
    if result.first_step_seconds is not None:
        console.print(f"time to first step: {result.first_step_seconds:.1f}s", markup=False)
    if result.resumed_seconds is not None:
        resumed = f", from step {result.resumed_from}" if result.resumed_from is not None else ""
        console.print(f"injected kill -> training resumed: {result.resumed_seconds:.1f}s{resumed}", markup=False)
    raise typer.Exit(0 if st.phase and st.phase.value == "Succeeded" else 1)


from . import jobs_cli  # noqa: E402,F401  (registers submit, get, describe, logs, delete, suspend, resume)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
