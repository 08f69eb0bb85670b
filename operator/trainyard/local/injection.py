"""`trainyard run --inject-failure`: kill a worker on purpose, after a time or at a step."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from ..api import progress


@dataclass
class Injection:
    """`worker=1,after=30s` or `worker=1,at-step=40` (signal=KILL by default)."""

    worker: int
    after: float | None = None
    at_step: int | None = None
    sig: int = signal.SIGKILL
    fired: bool = False

    @classmethod
    def parse(cls, text: str) -> Injection:
        fields = dict(part.split("=", 1) for part in text.split(",") if part)
        unknown = set(fields) - {"worker", "after", "at-step", "signal"}
        if unknown or "worker" not in fields or not ({"after", "at-step"} & fields.keys()):
            raise ValueError(f"--inject-failure {text!r}: expected worker=N,after=30s or worker=N,at-step=N "
                             "[,signal=KILL]")
        sig = fields.get("signal", "KILL").upper()
        return cls(
            worker=int(fields["worker"]),
            after=float(fields["after"].rstrip("s")) if "after" in fields else None,
            at_step=int(fields["at-step"]) if "at-step" in fields else None,
            sig=signal.Signals[sig if sig.startswith("SIG") else f"SIG{sig}"],
        )

    def due(self, started: float, steps: list[int]) -> bool:
        """`steps`: the newest training step of every live worker."""
        if self.fired:
            return False
        if self.after is not None and time.monotonic() - started >= self.after:
            return True
        return self.at_step is not None and any(s >= self.at_step for s in steps)


def step_of(line: progress.ProgressLine | None) -> int | None:
    return line.step if line is not None and line.kind == progress.STEP else None
