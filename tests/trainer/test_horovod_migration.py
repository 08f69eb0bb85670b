"""The Horovod -> torchrun migration example, run for real: one worker with 2 processes (gloo), as a
Trainyard job with ``procsPerWorker: 2`` runs it. Every Horovod call's replacement checks itself."""

from __future__ import annotations

import subprocess

import pytest

from .helpers import EXAMPLES, free_port, launcher_cmd, worker_env

pytestmark = pytest.mark.torch


def test_horovod_calls_map_to_torch_distributed():
    env = worker_env(0, 1, free_port(), "hvd-migration", PET_NPROC_PER_NODE="2")
    proc = subprocess.run([*launcher_cmd(), str(EXAMPLES / "horovod_to_torchrun.py"), "--steps", "10"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    oks = [line for line in proc.stdout.splitlines() if line.startswith("[horovod->torchrun] ok ")]
    assert len(oks) == 7, proc.stdout  # only rank 0 prints, one line per check
    assert "FAILED" not in proc.stdout + proc.stderr
    assert "[trainyard] done step=10" in proc.stdout.splitlines()
