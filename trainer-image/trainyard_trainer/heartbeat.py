"""The training heartbeat: a file whose mtime says "training made progress at this time".

The operator sets ``TRAINYARD_HEARTBEAT_FILE`` (and ``TRAINYARD_PROGRESS_DEADLINE_SECONDS``) when a
job declares a progress deadline; ``trainyard-launch`` watches the file's mtime and kills a gang
that stopped making progress. :func:`beat` is cheap and safe to call every step from every rank:
it touches the file at most once per ``min_interval`` seconds per process.
"""

from __future__ import annotations

import os
import time

from . import contract

ENV_FILE = contract.ENV_HEARTBEAT_FILE
ENV_DEADLINE = contract.ENV_PROGRESS_DEADLINE

_last_beat = 0.0


def heartbeat_path() -> str | None:
    """The heartbeat file from the environment, or None when no progress deadline is declared."""
    return os.environ.get(ENV_FILE) or None


def touch(path: str) -> None:
    """Create ``path`` (and its directory) if needed and set its mtime to now."""
    try:
        os.utime(path, None)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "a"):
            pass
        os.utime(path, None)


def beat(min_interval: float = 1.0) -> bool:
    """Touch ``$TRAINYARD_HEARTBEAT_FILE`` if it is set. Returns True when the file was touched.

    Never raises: a heartbeat that cannot be written must not kill training (the watchdog will
    then report the job as hung, which names the problem).
    """
    global _last_beat
    path = heartbeat_path()
    if not path:
        return False
    now = time.monotonic()
    if _last_beat and now - _last_beat < min_interval:
        return False
    try:
        touch(path)
    except OSError:
        return False
    _last_beat = now
    return True


def reset() -> None:
    """Forget the rate limit (for tests)."""
    global _last_beat
    _last_beat = 0.0
