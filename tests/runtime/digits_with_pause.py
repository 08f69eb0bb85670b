"""train_digits.py with a fault point for tests: it holds inside the write of one checkpoint, so a
test can kill the worker while a save is in flight (not a test module: a worker's script).

DIGITS_TEST_PAUSE_SAVE_AT=N   the checkpoint of step N (the data file, before its rename)
DIGITS_TEST_PAUSE_ONCE=PATH   a marker file: the hold happens in one gang only (the first that gets there)

On holding it prints ``[trainyard-test] holding inside the write of step-000000NN.pt`` and waits
for the test's kill (600 s at most: the job's activeDeadlineSeconds bounds a test that never kills).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from trainyard_trainer import checkpoint as ck
from trainyard_trainer.examples import train_digits

PAUSE_AT = int(os.environ.get("DIGITS_TEST_PAUSE_SAVE_AT", "-1"))
ONCE = os.environ.get("DIGITS_TEST_PAUSE_ONCE", "")
_real = ck._write_temp  # the data file is written to a temp, then renamed when published


def _holding(path: Path, write):
    m = ck.FILE_RE.match(path.name)
    if not (m and int(m.group(1)) == PAUSE_AT and ONCE) or os.path.exists(ONCE):
        return _real(path, write)

    def write_then_hold(f) -> None:
        write(f)
        f.flush()  # the temp file holds the whole checkpoint; the rename never comes
        Path(ONCE).touch()
        print(f"[trainyard-test] holding inside the write of {path.name}", flush=True)
        threading.Event().wait(600)

    return _real(path, write_then_hold)


ck._write_temp = _holding

if __name__ == "__main__":
    sys.exit(train_digits.main())
