"""What `trainyard run` shows: a rich live table on a terminal, plain lines otherwise (CI, logs)."""

from __future__ import annotations

import re

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..engine.plan import Event
from ..engine.progress import bar, newest_progress, progress_text
from .backend import LocalWorker, exit_status
from .runner import Runner


class View:
    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.live = self.console.is_terminal
        self._live: Live | None = None
        self.recent: list[Text] = []

    # callbacks from the runner. Messages are never read as rich markup: "[trainer]" must print.
    def event(self, ev: Event) -> None:
        style = "yellow" if ev.type == "Warning" else "cyan"
        line = Text.assemble((ev.reason, style), ": ", ev.message)
        if self.live:
            self.recent = (self.recent + [line])[-6:]
        else:
            self.console.print(f"event  {ev.reason}: {ev.message}", markup=False, highlight=False)

    def line(self, w: LocalWorker, line: str) -> None:
        if self.live:
            return
        if "[trainyard]" in line or re.search(r"Error|Traceback|Hung", line):
            self.console.print(f"w{w.launch.index}.{w.launch.attempt} | {line}", markup=False, highlight=False)

    def render(self, runner: Runner) -> Group:
        st = runner.job.status
        head = Text.assemble(
            (runner.job.metadata.name, "bold"), "  phase ", (str(st.phase.value if st.phase else "-"), "bold green"),
            f"  attempt {st.attempt}  restarts {st.restarts}  disruptions {st.disruptions}",
        )
        parts = [head, Text(st.message or "")]
        p = newest_progress([runner.backend.lease()], st)  # as status.progress says it, unthrottled
        if p is not None and p.step is not None:
            parts.append(self.progress_row(p, st.restarts, st.disruptions))
        table = Table(expand=True)
        for col in ("worker", "attempt", "pid", "state", "last progress"):
            table.add_column(col)
        for w in sorted(runner.backend.workers.values(), key=lambda w: (w.launch.index, w.launch.attempt)):
            rc = w.proc.returncode
            state = ("running" if rc is None else "succeeded" if rc == 0
                     else exit_status(rc)[1] if rc < 0 else f"exit {rc}")
            table.add_row(str(w.launch.index), str(w.launch.attempt), str(w.proc.pid), state, Text(w.progress))
        return Group(*parts, table, *self.recent)

    @staticmethod
    def progress_row(p, restarts: int, disruptions: int) -> Text:
        """``step 340/460 ━━━━━━━━━━━━━━╺━━━━ 73.9%  ETA 1m20s ...``: step/total, a bar and the ETA."""
        if p.percent is None:
            return Text(progress_text(p, restarts, disruptions))
        style = "grey50" if p.stale else "green"
        return Text.assemble((bar(p.percent), style), " ", progress_text(p, restarts, disruptions))

    def run(self, runner: Runner):
        if not self.live:
            return runner.run()
        with Live(self.render(runner), console=self.console, refresh_per_second=8) as live:
            result = runner.run(between=lambda: live.update(self.render(runner)))
            live.update(self.render(runner))
        return result
