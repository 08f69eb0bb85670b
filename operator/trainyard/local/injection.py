"""`trainyard run --inject-failure`: kill a worker on purpose, after a time or at a step."""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass

from ..api import progress
from ..api.errors import InvalidInput

USAGE = "expected worker=N,after=30s or worker=N,at-step=N [,signal=KILL]"


@dataclass
class Injection:
    """`worker=1,after=30s` or `worker=1,at-step=40` (signal=KILL by default)."""

    worker: int
    after: float | None = None
    at_step: int | None = None
    sig: int = signal.SIGKILL
    fired: bool = False

    @classmethod
    def parse(cls, text: str, workers: int | None = None) -> Injection:
        """`workers`: the job's worker count; a worker index outside it is refused, since the kill
        would never happen and the run would look like a recovery that was never tested."""

        def bad(why: str) -> InvalidInput:
            return InvalidInput(f"--inject-failure {text!r}: {why}")

        parts = [p.strip() for p in text.split(",") if p.strip()]
        if any("=" not in p for p in parts):
            raise bad(USAGE)
        fields = dict(p.split("=", 1) for p in parts)
        unknown = sorted(set(fields) - {"worker", "after", "at-step", "signal"})
        if unknown:
            raise bad(f"unknown key {', '.join(unknown)}; {USAGE}")
        if "worker" not in fields or not ({"after", "at-step"} & fields.keys()):
            raise bad(USAGE)
        if not re.fullmatch(r"\d+", fields["worker"]):
            raise bad(f"worker must be a worker index (0, 1, ...), not {fields['worker']!r}")
        worker = int(fields["worker"])
        if workers is not None and worker >= workers:
            raise bad(f"there is no worker {worker}: the job has {workers} worker(s), 0 to {workers - 1}")
        after = None
        if "after" in fields:
            m = re.fullmatch(r"(\d+(?:\.\d+)?)s?", fields["after"])
            if not m:
                raise bad(f"after must be seconds such as 30s, not {fields['after']!r}")
            after = float(m.group(1))
        at_step = None
        if "at-step" in fields:
            if not re.fullmatch(r"\d+", fields["at-step"]):
                raise bad(f"at-step must be a training step (0, 1, ...), not {fields['at-step']!r}")
            at_step = int(fields["at-step"])
        name = fields.get("signal", "KILL").upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name not in signal.Signals.__members__:
            raise bad(f"unknown signal {fields['signal']!r}; use a name such as KILL, TERM, INT or SEGV")
        return cls(worker=worker, after=after, at_step=at_step, sig=signal.Signals[name])

    def due(self, started: float, steps: list[int]) -> bool:
        """`steps`: the newest training step of every live worker."""
        if self.fired:
            return False
        if self.after is not None and time.monotonic() - started >= self.after:
            return True
        return self.at_step is not None and any(s >= self.at_step for s in steps)


def step_of(line: progress.ProgressLine | None) -> int | None:
    return line.step if line is not None and line.kind == progress.STEP else None
