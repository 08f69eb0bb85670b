"""`trainyard run`: a job on this machine, as local processes, with the operator's engine.

A job the apiserver would refuse is refused here with the apiserver's words; so is what cannot
work on a workstation (a command that is not there, valueFrom, a suspended job, a bad flag).
Every refusal is one line on stderr and exit 2, never a traceback; nothing is printed as rich
markup, so "[trainer]" in a message stays."""

from __future__ import annotations

from pathlib import Path

import typer


def run(
    file: Path = typer.Argument(..., help="A DistributedTrainingJob YAML."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Override spec.workers."),
    checkpoint_dir: Path | None = typer.Option(None, help="The checkpoint volume (default .trainyard/<job>/checkpoints)."),
    workdir: Path | None = typer.Option(None, help="Logs and heartbeats (default .trainyard/<job>)."),
    inject_failure: str | None = typer.Option(
        None, help="Kill a worker on purpose: worker=1,after=30s or worker=1,at-step=40 [,signal=KILL]."),
) -> None:
    """Run the job on this machine as local processes, with the operator's decision engine."""
    import faulthandler
    import signal as _signal

    from rich.console import Console

    from ..api.errors import TrainyardError
    from ..local.injection import Injection
    from ..local.preflight import check_runnable, prepare_dir
    from ..local.runner import Runner, load_job
    from ..local.view import View

    console = Console(soft_wrap=True)
    errors = Console(stderr=True, soft_wrap=True)

    def fail(e: BaseException) -> typer.Exit:
        errors.print(f"error: {' '.join(str(e).split())}", markup=False, highlight=False)
        return typer.Exit(2)

    try:
        job = load_job(file, workers)
        check_runnable(job)
        injection = Injection.parse(inject_failure, job.spec.desired_workers) if inject_failure else None
        base = prepare_dir(workdir or Path(".trainyard") / job.metadata.name, "--workdir")
        ckpt = prepare_dir(checkpoint_dir or base / "checkpoints", "--checkpoint-dir")
    except TrainyardError as e:
        raise fail(e) from None
    view = View(console)
    runner = Runner(job, base, ckpt, injection, on_event=view.event, on_line=view.line)
    _signal.signal(_signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Started from a script's background job, SIGINT comes in ignored (and Python keeps it so):
    # `kill -INT` must still stop every worker.
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    faulthandler.register(_signal.SIGUSR2, all_threads=True)  # kill -USR2: where it is, on stderr
    try:
        result = view.run(runner)
    except KeyboardInterrupt:
        console.print("interrupted: every worker stopped", markup=False)
        raise typer.Exit(130) from None
    except OSError as e:  # a worker that could not be started (the checks above make this rare)
        raise fail(f"cannot start a worker: {e}") from None
    st = result.job.status
    console.print(f"{result.job.metadata.name}: {st.phase.value if st.phase else '-'} after {st.restarts} restart(s), "
                  f"{st.disruptions} disruption(s), attempt {st.attempt}: {st.message}", markup=False, highlight=False)
    if result.final:
        console.print(f"final: {result.final}", markup=False, highlight=False)
    if result.first_step_seconds is not None:
        console.print(f"time to first step: {result.first_step_seconds:.1f}s", markup=False, highlight=False)
    if result.resumed_seconds is not None:
        resumed = f", from step {result.resumed_from}" if result.resumed_from is not None else ""
        position = result.resumed_fields or {}
        if "epoch" in position and str(position.get("sample", "")).count("/") == 1:
            sample, total = str(position["sample"]).split("/")
            resumed += f" (epoch {position['epoch']}, sample {int(sample):,} of {int(total):,})"
        console.print(f"injected kill -> training resumed: {result.resumed_seconds:.1f}s{resumed}", markup=False,
                      highlight=False)
    raise typer.Exit(0 if st.phase and st.phase.value == "Succeeded" else 1)
