"""The `trainyard` command: every subcommand registered on one typer app."""

from __future__ import annotations

import typer

from . import jobs, run, serve

app = typer.Typer(help="Trainyard: distributed PyTorch training on Kubernetes.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

app.command()(serve.crd)
app.command("operator")(serve.operator)
app.command()(run.run)
for command in (jobs.submit, jobs.get, jobs.describe, jobs.logs, jobs.delete, jobs.suspend, jobs.resume):
    app.command()(command)


def main() -> None:
    app()
