"""The training heartbeat: a file whose mtime says "training made progress at this time".

The operator sets ``TRAINYARD_HEARTBEAT_FILE`` (and ``TRAINYARD_PROGRESS_DEADLINE_SECONDS``,
``TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS``) when a job declares a progress deadline;
``trainyard-launch`` watches the file and kills a gang that stopped making progress: it is the
backstop of the operator's own hang detection (the job's Lease, :mod:`trainyard_trainer.progress`).

The file's content says which deadline applies: ``starting`` (written by the launcher when it starts
torchrun, and by :func:`starting` when a trainer process starts) until the first step, then
``training`` (written by the first :func:`beat` after it). :func:`beat` is cheap and safe to call
every step from every rank: it touches the file at most once per ``min_interval`` seconds per
process.
"""

from __future__ import annotations

import os
import time

from . import contract

ENV_FILE = contract.ENV_HEARTBEAT_FILE
ENV_DEADLINE = contract.ENV_PROGRESS_DEADLINE
ENV_FIRST_DEADLINE = contract.ENV_FIRST_PROGRESS_DEADLINE
STARTING = "starting"
TRAINING = "training"

_last_beat = 0.0
_last_check = 0.0  # when beat() last looked at the environment and the file
_state: str | None = None  # what this process last wrote (None: nothing yet)


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


def mark(path: str, state: str) -> None:
    """Write ``state`` (STARTING or TRAINING) into the heartbeat file; that also sets its mtime."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w") as f:
        f.write(state + "\n")


def state_of(path: str) -> str:
    """STARTING or TRAINING as the file says (TRAINING for an empty or unreadable one)."""
    try:
        with open(path) as f:
            return STARTING if f.read(16).startswith(STARTING) else TRAINING
    except OSError:
        return TRAINING


def starting() -> bool:
    """A trainer process starts (or restarted in place): the first-step budget applies again."""
    global _last_beat, _state
    path = heartbeat_path()
    if not path:
        return False
    try:
        mark(path, STARTING)
    except OSError:
        return False
    _state, _last_beat = STARTING, time.monotonic()
    return True


def beat(min_interval: float = 1.0) -> bool:
    """Touch ``$TRAINYARD_HEARTBEAT_FILE`` if it is set. Returns True when the file was touched.

    Never raises: a heartbeat that cannot be written must not kill training (the watchdog will
    then report the job as hung, which names the problem).
    """
    global _last_beat, _last_check, _state
    now = time.monotonic()
    if _state != STARTING and now - _last_check < min_interval:
        return False  # the hot path: nothing to do more than once per interval
    _last_check = now
    path = heartbeat_path()
    if not path:
        return False
    try:
        if _state != TRAINING:  # this process's first step (since its start): the steady deadline from now on
            mark(path, TRAINING)
            _state = TRAINING
        elif _last_beat and now - _last_beat < min_interval:
            return False
        else:
            touch(path)
    except OSError:
        return False
    _last_beat = now
    return True


def reset() -> None:
    """Forget the rate limit and the state (for tests)."""
    global _last_beat, _last_check, _state
    _last_beat = _last_check = 0.0
    _state = None
