"""Showing a job while `wait` polls it: a live table in a terminal, an updating display in a
notebook, plain lines in logs and CI."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from .. import api
from ..engine.gang import current_gang
from ..engine.progress import bar, progress_text
from .info import WorkerInfo, age


def _in_jupyter() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and (type(shell).__name__ == "ZMQInteractiveShell"
                                  or "google.colab" in str(type(shell)))


@dataclass
class StatusView:
    """Shows a job while `wait` polls it. Modes: "live" (a rich live table, for terminals),
    "jupyter" (an updating display in a notebook; no ipywidgets needed), "lines" (one plain line
    per change, for logs and CI) and "off". `StatusView.auto()` picks jupyter, live or off."""

    mode: str = "off"
    stream: Any = None
    _live: Any = field(default=None, repr=False)
    _handle: Any = field(default=None, repr=False)
    _last: Any = field(default=None, repr=False)

    @classmethod
    def auto(cls, fallback: str = "off", stream: Any = None) -> StatusView:
        if _in_jupyter():
            return cls("jupyter", stream)
        out = stream or sys.stderr
        if hasattr(out, "isatty") and out.isatty():
            return cls("live", out)
        return cls(fallback, stream)

    @property
    def wants_workers(self) -> bool:
        return self.mode in ("live", "jupyter")

    def update(self, obj: dict[str, Any], workers: list[WorkerInfo]) -> None:
        if self.mode == "off":
            return
        if self.mode == "lines":
            line = status_line(obj)
            if line != self._last:
                self._last = line
                out = self.stream or sys.stdout
                print(line, file=out, flush=True)
            return
        renderable = render_status(obj, workers)
        if self.mode == "jupyter":
            from IPython.display import display
            from rich.panel import Panel

            panel = Panel(renderable, expand=False)
            if self._handle is None:
                self._handle = display(panel, display_id=True)
            else:
                self._handle.update(panel)
            return
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(renderable, console=Console(file=self.stream or sys.stderr), refresh_per_second=4,
                              transient=False)
            self._live.start()
        else:
            self._live.update(renderable, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def job_progress(obj: dict[str, Any]) -> api.Progress | None:
    """status.progress of a job object, or None before the trainer's first report."""
    raw = (obj.get("status") or {}).get("progress")
    if not raw:
        return None
    try:
        return api.Progress.model_validate(raw)
    except Exception:  # a newer operator's field: show nothing rather than fail
        return None


def progress_line(obj: dict[str, Any]) -> str | None:
    """"step 340/460 (73.9%), ETA 1m, loss 0.34 ...; resumed at step 300 after restart 1", or None."""
    p = job_progress(obj)
    if p is None or p.step is None:
        return None
    st = obj.get("status") or {}
    return progress_text(p, st.get("restarts", 0), st.get("disruptions", 0))


def status_line(obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    w = st.get("workers") or {}
    line = (f"{obj['metadata']['name']}: {st.get('phase') or 'Pending'}  ready {w.get('ready', 0)}/"
            f"{w.get('desired', 0)}  attempt {st.get('attempt', 0)}  restarts {st.get('restarts', 0)}")
    p = job_progress(obj)
    if p is not None and p.step is not None:
        line += f"  step {p.step}" + (f"/{p.total_steps}" if p.total_steps else "") + (
            f"  ETA {p.eta}" if p.eta and not p.stale else "")
    return line + (f"  {st['message']}" if st.get("message") else "")


def render_status(obj: dict[str, Any], workers: list[WorkerInfo]) -> Any:
    """A rich renderable: the job's phase and counts, its message and a table of its current pods."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    st = obj.get("status") or {}
    phase = st.get("phase") or "Pending"
    colour = {"Succeeded": "bold green", "Failed": "bold red", "Running": "green", "Restarting": "yellow",
              "Suspended": "magenta"}.get(phase, "cyan")
    w = st.get("workers") or {}
    head = Text.assemble((obj["metadata"]["name"], "bold"), "  ", (phase, colour),
                         f"  ready {w.get('ready', 0)}/{w.get('desired', 0)}  attempt {st.get('attempt', 0)}"
                         f"  restarts {st.get('restarts', 0)}  disruptions {st.get('disruptions', 0)}"
                         f"  age {age(obj['metadata'].get('creationTimestamp'))}")
    table = Table(box=None, pad_edge=False)
    for col in ("WORKER", "ATTEMPT", "POD", "PHASE", "EXIT", "REASON", "NODE"):
        table.add_column(col)
    current = list(current_gang(workers, api.DistributedTrainingJobStatus.model_validate(st)).values())
    for p in current:
        table.add_row(str(p.index), str(p.attempt), p.name, p.phase + (" (deleting)" if p.deleting else ""),
                      "-" if p.exit_code is None else str(p.exit_code), p.reason or "-", p.node or "-")
    parts: list[Any] = [head]
    if st.get("message"):
        parts.append(Text(st["message"]))
    p, line = job_progress(obj), progress_line(obj)
    if p is not None and line is not None:
        parts.append(Text.assemble((bar(p.percent), "grey50" if p.stale else "green"), " ", line)
                     if p.percent is not None else Text(line))
    if current:
        parts.append(table)
    return Group(*parts)
