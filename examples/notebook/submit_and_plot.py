"""Submit examples/digits-ddp.yaml, watch its progress, and plot its loss curve.

While it runs, `client.wait(name)` shows a live display (a terminal's table, a notebook's updating
output) with a progress bar, step/total and the ETA; `client.progress(name)` is status.progress (the
trainer's reports through the job's Lease). The loss curve comes from the
`[trainyard] step=N epoch=E loss=X samples_per_s=S` lines the trainer prints;
`trainyard.sdk.parse_progress` turns them into dicts. Three places to run it:

0. This machine, no cluster (`LocalClient`, the engine and local processes of `trainyard run`):

       python examples/notebook/submit_and_plot.py --local --workers 2 --out loss.png

1. A cluster (the current kubeconfig context, or --kubeconfig/--context/--namespace):

       python examples/notebook/submit_and_plot.py --workers 2 --out loss.png

   submits the job, shows a live status table until it is Succeeded or Failed (in a terminal or
   a notebook), reads the workers' logs and plots them. On the local kwok cluster (`make
   cluster-up`) the workers are fake pods: they run until someone ends them (the tests patch their
   status) and have no logs, so this path ends with "no logs" there; use a real cluster or:

2. A local run of the same YAML (`trainyard run`, no cluster needed):

       trainyard run examples/digits-ddp.yaml --workers 2 --workdir /tmp/digits
       python examples/notebook/submit_and_plot.py --from-run /tmp/digits --out loss.png

   The logs are in /tmp/digits/attempt-N/worker-I.log; after a restart each attempt is a
   separate curve, and the overlap shows where training resumed from its checkpoint.

The same functions work in Jupyter: see submit_and_plot.ipynb beside this file (make test
executes it with a real kernel on this machine: tests/runtime/test_notebook.py).
Needs matplotlib (pip install matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from trainyard.sdk import Job, LocalClient, TrainyardClient, TrainyardError, parse_progress

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits-ddp.yaml"


def example_job(path: Path = EXAMPLE, workers: int | None = None, args: list[str] | None = None) -> Job:
    """The example's job, optionally with another worker count and other trainer arguments."""
    job = Job.from_yaml(path)
    if workers is not None:
        job.spec.workers = workers
    if args is not None:
        job.spec.template["spec"]["containers"][0]["args"] = list(args)
    return job


def submit_and_wait(client: TrainyardClient | LocalClient, path: Path = EXAMPLE, workers: int | None = None,
                    timeout: float | None = None, progress: bool = True, args: list[str] | None = None):
    """Submits the YAML (optionally with another worker count) and waits until it ends."""
    name = client.submit(example_job(path, workers, args))
    status = client.wait(name, timeout=timeout, progress=progress)
    return name, status


def cluster_progress(client: TrainyardClient, name: str) -> list[dict[str, Any]]:
    """Progress records from the logs of the job's current workers (only rank 0 prints them)."""
    return parse_progress(client.logs(name))


def progress_records(client: TrainyardClient | LocalClient, name: str) -> list[dict[str, Any]]:
    """The loss curve's data: the progress lines of a local run's work directory (every attempt), or
    of a cluster job's current workers' logs."""
    if isinstance(client, LocalClient):
        return client.records(name)
    return cluster_progress(client, name)


def plot_loss(records: list[dict[str, Any]], out: str | Path | None = None, title: str = "digits-ddp"):
    """Loss against step, one curve per attempt. Saves to `out` when given; returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    attempts = sorted({r.get("attempt", 0) for r in records})
    for a in attempts:
        points = sorted((r["step"], r["loss"]) for r in records if r.get("attempt", 0) == a and "loss" in r)
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, marker=".", label=f"attempt {a}" if len(attempts) > 1 else "loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from-run", type=Path, help="a `trainyard run` work directory (.trainyard/<job>) to plot")
    p.add_argument("--local", action="store_true", help="run the job on this machine (LocalClient), not a cluster")
    p.add_argument("--workdir", type=Path, default=Path(".trainyard"), help="--local: where the runs go")
    p.add_argument("--file", type=Path, default=EXAMPLE, help="the job YAML to submit (default digits-ddp)")
    p.add_argument("--workers", type=int, help="override spec.workers")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.add_argument("--kubeconfig")
    p.add_argument("--context")
    p.add_argument("--namespace", "-n")
    p.add_argument("--out", type=Path, default=Path("loss.png"))
    args = p.parse_args(argv)
    try:
        if args.from_run:
            records = parse_progress(args.from_run)
            title = args.from_run.name
        elif args.local:
            local = LocalClient(args.workdir)
            name, status = submit_and_wait(local, args.file, args.workers, args.timeout)
            print(f"{name}: {status.phase.value if status.phase else '-'}: {status.message or ''}")
            records, title = local.records(name), name
        else:
            client = TrainyardClient(args.kubeconfig, args.context, args.namespace)
            name, status = submit_and_wait(client, args.file, args.workers, args.timeout)
            print(f"{name}: {status.phase.value if status.phase else '-'}: {status.message or ''}")
            records = cluster_progress(client, name)
            title = name
    except TrainyardError as e:
        print(f"error: {e}", file=sys.stderr)
        if not args.from_run:
            print("(on a kwok cluster there are no logs: plot a local run with --from-run instead)", file=sys.stderr)
        return 1
    if not records:
        print("error: no [trainyard] step=... lines found", file=sys.stderr)
        return 1
    plot_loss(records, args.out, title)
    last = max(records, key=lambda r: (r.get("attempt", 0), r["step"]))
    print(f"{len(records)} progress lines, last step {last['step']} loss {last.get('loss')}; plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
