"""The progress-line grammar, read side: the one parser the operator package has.

A training script (through `trainyard_trainer.progress`, which writes these lines) prints::

    [trainyard] starting from step=0
    [trainyard] resumed from step=100 [key=value ...]
    [trainyard] step=120 epoch=3 loss=0.3412 samples_per_s=1534.2 [key=value ...]
    [trainyard] checkpoint step=120 stall_s=0.123 async=true
    [trainyard] done step=500 [accuracy=0.9712 ...]

Anything before the prefix (a log prefix, a kubelet timestamp, torchrun's `[default0]:`) is
ignored, and any extra key=value field is kept, so a newer trainer never breaks an older reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PREFIX = "[trainyard]"

START = "start"
RESUMED = "resumed"
STEP = "step"
CHECKPOINT = "checkpoint"
DONE = "done"

_KINDS = {"starting from": START, "resumed from": RESUMED, "checkpoint": CHECKPOINT, "done": DONE, None: STEP}
_LINE = re.compile(r"\[trainyard\] (?:(starting from|resumed from|checkpoint|done) )?step=(\d+)"
                   r"((?: [A-Za-z_][\w.]*=\S+)*)\s*$")


@dataclass(frozen=True)
class ProgressLine:
    kind: str
    step: int
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    if text in ("true", "false"):
        return text == "true"
    return text


def parse_line(line: str) -> ProgressLine | None:
    """The progress line in `line`, or None if it holds none."""
    m = _LINE.search(line.rstrip("\r\n"))
    if m is None:
        return None
    fields = {}
    for pair in m.group(3).split():
        key, value = pair.split("=", 1)
        fields[key] = _value(value)
    return ProgressLine(_KINDS[m.group(1)], int(m.group(2)), fields)
