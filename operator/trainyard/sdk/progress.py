"""Training progress from the logs, as data (for a plot in a notebook)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..api import contract, progress
from ..engine.progress import progress_text

__all__ = ["parse_progress", "progress_text"]

_FILE_ATTEMPT = re.compile("^" + contract.ATTEMPT_DIR.replace("{attempt}", r"(\d+)") + "$")
_FILE_WORKER = re.compile("^" + re.escape(contract.WORKER_LOG).replace(r"\{index\}", r"(\d+)") + "$")


def parse_progress(source: Any, *, worker: int | None = None, attempt: int | None = None) -> list[dict[str, Any]]:
    """The training steps in Trainyard progress lines (`[trainyard] step=N epoch=E loss=X ...`):
    one dict per line, every key=value field converted to int or float, plus `worker` and
    `attempt` when known. Anything before "[trainyard]" on a line (a `w0| ` prefix, a timestamp,
    torchrun's `[default0]:`) is ignored, and so are the other progress lines.

    `source` is any of: an iterable of lines; an iterable of (worker, line) pairs, as
    `TrainyardClient.logs()` yields them; text (a str holding newlines); a `pathlib.Path` to one
    log file; or a `pathlib.Path` to the work directory of `trainyard run`
    (`.trainyard/<job>/`, with `attempt-N/worker-I.log`), read in attempt order. After a gang
    restart the steps from the last checkpoint on appear twice: once per attempt."""
    if isinstance(source, os.PathLike):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.rglob(contract.WORKER_LOG.format(index="*")), key=_log_file_key)
            return [r for f in files for r in parse_progress(f)]
        m_w, m_a = _FILE_WORKER.search(path.name), _FILE_ATTEMPT.search(path.parent.name)
        with open(path, errors="replace") as f:
            return parse_progress(f, worker=int(m_w.group(1)) if m_w else worker,
                                  attempt=int(m_a.group(1)) if m_a else attempt)
    if isinstance(source, str):
        source = source.splitlines()
    out: list[dict[str, Any]] = []
    for item in source:
        w, line = (item if isinstance(item, tuple) else (worker, item))
        p = progress.parse_line(line)
        if p is None or p.kind != progress.STEP:
            continue
        rec: dict[str, Any] = {"step": p.step, **p.fields}
        if w is not None:
            rec["worker"] = w
        if attempt is not None:
            rec["attempt"] = attempt
        out.append(rec)
    return out


def _log_file_key(path: Path) -> tuple[int, int, str]:
    m_a, m_w = _FILE_ATTEMPT.search(path.parent.name), _FILE_WORKER.search(path.name)
    return (int(m_a.group(1)) if m_a else -1, int(m_w.group(1)) if m_w else -1, str(path))
