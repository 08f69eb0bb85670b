"""The e2e tiers' one-time set-ups, started in the background when the session begins.

On a fresh machine the Go builds (control plane, Kueue, kubelet), the Debian packages and the
images take about half an hour, and each tier's session fixture used to start its own only when the
tier's first test ran, so the tiers without a cluster ran first on an idle machine, and the set-ups
ran after them, one by one. Here they start as soon as the tests are collected, at the lowest CPU
priority (nice 19: a test never waits for a compiler), in two lanes: the Go builds, which are CPU
bound, and the packages then the images, which mostly wait on downloads and disks. The unit, trainer
and runtime tiers run first (see conftest.py), so the builds use what those leave of the CPU.

A fixture calls `wait(script)` before it runs a set-up script itself: it waits for the background
run of that script (if one is queued or running) and then runs it anyway, which is a no-op that
takes under a second when the background run built everything, and shows the real error when it
did not. So nothing is built twice at once and no failure is hidden. On a warm machine every step is
a cached no-op. TRAINYARD_PREBUILD=0 turns this off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "e2e"

# The lanes, each in order; a step runs only if a selected tier needs it.
LANES: dict[str, list[tuple[str, set[str]]]] = {
    "go": [("cluster/build.sh", {"chart", "cluster", "kueue", "node"}),
           ("kueue/build.sh", {"kueue"}),
           ("node/build.sh", {"node"})],
    "debian": [("node/deps.sh", {"node"}),
               ("images/build.sh", {"node"})],
}


class _Step:
    def __init__(self, script: str):
        self.script = script
        self.done = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.seconds: float | None = None
        self.returncode: int | None = None


_steps: dict[str, _Step] = {}
_stopping = threading.Event()


def _log_dir() -> Path:
    cache = Path(os.environ.get("TRAINYARD_CACHE") or Path.home() / ".cache" / "trainyard")
    path = cache / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_lane(steps: list[_Step]) -> None:
    for step in steps:
        try:
            if _stopping.is_set():
                continue
            t0 = time.monotonic()
            log = _log_dir() / f"prebuild-{step.script.replace('/', '-')}.log"
            with open(log, "w") as out:
                # nice(1), not preexec_fn: the lanes are threads, and preexec_fn is unsafe with threads.
                step.proc = subprocess.Popen(["nice", "-n", "19", str(E2E / step.script)], stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
                step.returncode = step.proc.wait()
            step.seconds = round(time.monotonic() - t0, 1)
        except Exception:  # noqa: BLE001 - the fixture runs the script itself and reports what fails
            pass
        finally:
            step.done.set()


def start(tiers: set[str]) -> None:
    """Starts the lanes' steps that the selected `tiers` need (once per session)."""
    if _steps or os.environ.get("TRAINYARD_PREBUILD", "1") == "0":
        return
    if shutil.which("go") is None:
        return  # the tiers say why they cannot run
    for lane, steps in LANES.items():
        chosen = [_Step(script) for script, needed_by in steps if needed_by & tiers]
        if lane == "debian" and os.geteuid() != 0:
            chosen = []  # the node tier needs root, and says so
        for step in chosen:
            _steps[step.script] = step
        if chosen:
            threading.Thread(target=_run_lane, args=(chosen,), name=f"prebuild-{lane}", daemon=True).start()


def wait(script: str, timeout: float) -> None:
    """Waits for the background run of `script` ("cluster/build.sh"), if one was started. The
    caller then runs the script itself: a cached no-op, or the real error."""
    step = _steps.get(script)
    if step is not None:
        step.done.wait(timeout)


def stop() -> None:
    """The session is over: a step still running is stopped (the scripts install each binary with a
    rename, so an interrupted build leaves nothing half-written), and what ran is reported."""
    _stopping.set()
    for step in _steps.values():
        if step.proc is not None and step.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(step.proc.pid, signal.SIGTERM)
    ran = {s.script: (s.seconds, s.returncode) for s in _steps.values() if s.seconds is not None}
    if ran:
        print(f"\n[prebuild] background set-ups (script: seconds, exit code): {ran}", file=sys.stderr)
