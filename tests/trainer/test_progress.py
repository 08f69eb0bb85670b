"""Progress lines (a stable format) and the heartbeat."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from trainyard_trainer import contract, heartbeat
from trainyard_trainer.lease import LeaseClient, LeaseDir, LeaseError
from trainyard_trainer.progress import (
    CHECKPOINT_RE,
    DONE_RE,
    RESUMED_RE,
    STARTING_RE,
    STEP_RE,
    Progress,
    Reporter,
    format_checkpoint,
    format_done,
    format_start,
    format_step,
)

from ..support import wait_for
from .helpers import SYNTHETIC, base_env


def test_exact_formats():
    assert format_step(120, 3, 0.34123, 1534.24) == "[trainyard] step=120 epoch=3 loss=0.3412 samples_per_s=1534.2"
    assert format_start(100) == "[trainyard] resumed from step=100"
    assert format_start(0) == "[trainyard] starting from step=0"
    assert format_done(500, 0.97123) == "[trainyard] done step=500 accuracy=0.9712"
    assert format_done(500) == "[trainyard] done step=500"
    assert format_checkpoint(120, 0.1234, True) == "[trainyard] checkpoint step=120 stall_s=0.123 async=true"
    assert format_checkpoint(7, 2, False) == "[trainyard] checkpoint step=7 stall_s=2.000 async=false"


def test_regexes_parse_the_formats():
    m = STEP_RE.match(format_step(120, 3, 0.3412, 1534.2))
    assert (m["step"], m["epoch"], m["loss"], m["samples_per_s"]) == ("120", "3", "0.3412", "1534.2")
    assert STEP_RE.match(format_step(1, 0, float("nan"), 0.0))
    assert RESUMED_RE.match(format_start(100))["step"] == "100"
    assert STARTING_RE.match(format_start(0))["step"] == "0"
    assert DONE_RE.match(format_done(500, 0.9712))["accuracy"] == "0.9712"
    assert DONE_RE.match(format_done(500))["accuracy"] is None
    assert CHECKPOINT_RE.match(format_checkpoint(120, 0.123, True))["async"] == "true"


def test_resumed_line_carries_the_data_position_and_keeps_its_prefix():
    line = format_start(250, (10, 1280, 1437))
    assert line == "[trainyard] resumed from step=250 epoch=10 sample=1280/1437"
    m = RESUMED_RE.match(line)
    assert (m["step"], m["epoch"], m["sample"], m["num_samples"]) == ("250", "10", "1280", "1437")
    assert RESUMED_RE.match(format_start(100))["epoch"] is None  # the old line still parses
    assert line.startswith(format_start(250) + " ")  # and is a prefix of the new one
    assert format_start(0, (0, 0, 1437)) == "[trainyard] starting from step=0"
    out = io.StringIO()
    Progress(rank=0, stream=out).start(250, (10, 1280, 1437))
    assert out.getvalue() == line + "\n"


def test_one_line_per_interval_from_rank_0():
    out = io.StringIO()
    p = Progress(log_every=10, rank=0, stream=out)
    p.start(0)
    for step in range(1, 31):
        p.step(step, 0, 1.0 / step, samples=64)
    p.done(30, 0.5)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[trainyard] starting from step=0"
    assert [STEP_RE.match(line)["step"] for line in lines[1:4]] == ["10", "20", "30"]
    assert all(float(STEP_RE.match(line)["samples_per_s"]) > 0 for line in lines[1:4])
    assert lines[4] == "[trainyard] done step=30 accuracy=0.5000"
    assert len(lines) == 5


def test_other_ranks_print_nothing():
    out = io.StringIO()
    p = Progress(log_every=1, rank=1, stream=out)
    p.start(5)
    p.step(6, 0, 0.1, samples=1)
    p.done(6)
    assert out.getvalue() == ""


def test_rank_comes_from_torchrun_env(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    assert Progress().rank == 3
    monkeypatch.delenv("RANK")
    assert Progress().rank == 0


def test_beat_without_env_is_a_no_op(monkeypatch):
    monkeypatch.delenv(heartbeat.ENV_FILE, raising=False)
    heartbeat.reset()
    assert heartbeat.beat() is False


def test_beat_creates_and_touches(monkeypatch, tmp_path):
    path = tmp_path / "run" / "heartbeat"
    monkeypatch.setenv(heartbeat.ENV_FILE, str(path))
    heartbeat.reset()
    assert heartbeat.beat() is True and path.exists()
    os.utime(path, (time.time() - 100, time.time() - 100))
    assert heartbeat.beat() is False  # rate-limited: at most once a second per process
    heartbeat.reset()
    assert heartbeat.beat(min_interval=0) is True
    assert time.time() - path.stat().st_mtime < 5


def test_progress_step_beats_on_every_rank(monkeypatch, tmp_path):
    path = tmp_path / "beat"
    monkeypatch.setenv(heartbeat.ENV_FILE, str(path))
    heartbeat.reset()
    Progress(log_every=100, rank=1, stream=io.StringIO()).step(1, 0, 0.5)  # prints nothing, still beats
    assert path.exists()


@pytest.fixture(autouse=True)
def _reset_heartbeat():
    yield
    heartbeat.reset()


# ---------------------------------------------------------------------------- the heartbeat's states


def test_the_heartbeat_says_starting_until_the_first_step(monkeypatch, tmp_path):
    path = tmp_path / "beat"
    monkeypatch.setenv(heartbeat.ENV_FILE, str(path))
    heartbeat.reset()
    assert heartbeat.starting() and heartbeat.state_of(str(path)) == heartbeat.STARTING
    assert heartbeat.beat() and heartbeat.state_of(str(path)) == heartbeat.TRAINING  # at once, not rate-limited
    assert heartbeat.beat() is False  # then at most once a second
    assert heartbeat.starting() and heartbeat.state_of(str(path)) == heartbeat.STARTING  # a restarted trainer
    heartbeat.reset()
    heartbeat.mark(str(path), heartbeat.STARTING)  # the launcher wrote it; this process never called starting()
    assert heartbeat.beat() and heartbeat.state_of(str(path)) == heartbeat.TRAINING
    assert heartbeat.state_of(str(tmp_path / "missing")) == heartbeat.TRAINING


# ---------------------------------------------------------------------------- progress reports


class Recorder:
    """A Lease that records what is patched into it (a real one: tests/cluster/test_progress.py)."""

    def __init__(self, fail: int = 0, error: Exception | None = None):
        self.patches: list[dict] = []
        self.fail = fail
        self.error = error or OSError("apiserver unreachable")

    def patch(self, annotations, *, holder=None, renew=False):
        if self.fail:
            self.fail -= 1
            raise self.error
        self.patches.append({k: json.loads(v) for k, v in annotations.items()})

    def close(self):
        pass

    def docs(self) -> list[dict]:
        return [p[contract.ANNOTATION_PROGRESS] for p in self.patches]


def test_a_start_and_the_first_step_are_sent_at_once_later_steps_once_per_interval():
    lease = Recorder()
    r = Reporter(lease, interval=3600)
    r.start(100, total_steps=200)
    wait_for(lambda: len(lease.patches) == 1, 10, "the start report")
    r.report(101, loss=0.5)
    wait_for(lambda: len(lease.patches) == 2, 10, "the first step's report")
    for step in range(102, 150):
        r.report(step, loss=0.4, samples=32)
    time.sleep(0.3)
    assert [d["step"] for d in lease.docs()] == [100, 101]  # the interval holds the rest back
    assert r.flush(10)
    r.close()
    start, first, last = lease.docs()
    assert (start["training"], start["startStep"], start["totalSteps"]) == (False, 100, 200)
    assert (first["training"], first["loss"]) == (True, 0.5)
    assert (last["step"], last["loss"], last["totalSteps"], last["startStep"]) == (149, 0.4, 200, 100)
    assert last["samplesPerSecond"] > 0 and last["stepsPerSecond"] > 0


def test_a_report_never_raises_and_a_failed_send_is_said_once_and_retried():
    lease = Recorder(fail=3)
    err = io.StringIO()
    r = Reporter(lease, interval=0.05, stream=err)
    r.start(0)
    r.report(1, loss=float("nan"))  # not a number: the report goes without it
    r.report(2, loss=object())
    wait_for(lambda: lease.patches, 10, "a send that got through")
    assert r.flush(10)
    r.close()
    assert r.failures == 3 and err.getvalue().count("progress report failed") == 1
    assert "loss" not in lease.docs()[-1] and lease.docs()[-1]["step"] == 2


def test_a_lease_not_made_yet_is_waited_for_quietly_not_for_a_whole_interval():
    """The operator makes the Lease once worker 0 has its pod IP, about when rank 0 starts: a 404
    (or a 403 before the RoleBinding) is not a fault to print, and the start is sent within seconds."""
    lease = Recorder(fail=2, error=LeaseError("PATCH /apis/...: 404 Not Found: leases \"x\" not found", 404))
    err = io.StringIO()
    r = Reporter(lease, interval=3600, stream=err)
    r.start(0)
    wait_for(lambda: lease.patches, 10, "the start report, once the Lease is there")
    r.close()
    assert r.failures == 2 and err.getvalue() == ""
    # any other failure is said, and waits the interval (a failed start is not sent again at once)
    lease = Recorder(fail=1, error=LeaseError("PATCH /apis/...: 500 Internal Server Error: etcd", 500))
    r = Reporter(lease, interval=3600, stream=err)
    r.start(0)
    wait_for(lambda: r.failures == 1, 10, "the failed send")
    time.sleep(0.2)
    assert lease.patches == [] and r.failures == 1 and "progress report failed" in err.getvalue()
    r.close()


def test_the_launchers_start_note_waits_for_the_lease():
    from trainyard_trainer.launch import LaunchConfig, Launcher

    env = {"PET_RDZV_ENDPOINT": "demo-0-0.demo.ml.svc.cluster.local.:29400", "PET_RDZV_ID": "uid-x-0",
           "TRAINYARD_WORKER_INDEX": "0", "TRAINYARD_ATTEMPT": "0"}
    launcher = Launcher(LaunchConfig.from_env(["t.py"], env), env)
    launcher._lease_obj = lease = Recorder(fail=2, error=LeaseError("PATCH: 403 Forbidden: cannot patch", 403))
    launcher._announce_start()
    assert lease.fail == 0 and [set(p) for p in lease.patches] == [{contract.ANNOTATION_LAUNCHER}]
    launcher._lease_obj = lease = Recorder(fail=1, error=LeaseError("PATCH: 422 Unprocessable Entity", 422))
    launcher._announce_start()  # not "not yet": said, not tried again
    assert lease.patches == []


def test_a_stuck_apiserver_never_blocks_a_step(tmp_path):
    """The Lease's apiserver accepts the connection and never answers (the TLS handshake hangs):
    rank 0's reporter thread is stuck in its send, and every report() still returns at once."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    token = tmp_path / "token"
    token.write_text("t")
    lease = LeaseClient("ns", "job-progress", f"https://127.0.0.1:{server.getsockname()[1]}", token_file=str(token),
                        ca_file=None, timeout=3600)
    r = Reporter(lease, interval=0.01)
    r.start(0)
    wait_for(lambda: accepted, 10, "the reporter's connection")
    done = threading.Event()

    def train():
        for step in range(1, 20001):
            r.report(step, loss=1.0, samples=8)
        done.set()

    threading.Thread(target=train, daemon=True).start()
    assert done.wait(60), "report() blocked behind the stuck send"
    assert r.sends == 0 and r.failures == 0  # the send is still in flight
    server.close()


def test_the_reporter_of_each_rank_from_the_operators_environment(tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    env = {"TRAINYARD_PROGRESS_LEASE": "ml/demo-progress", "KUBERNETES_SERVICE_HOST": "10.0.0.1",
           "KUBERNETES_SERVICE_PORT": "443", "TRAINYARD_SERVICE_ACCOUNT_DIR": str(sa), "TRAINYARD_ATTEMPT": "3",
           "TRAINYARD_WORKER_INDEX": "1", "TRAINYARD_PROGRESS_INTERVAL_SECONDS": "4", "HOSTNAME": "demo-3-1"}
    r0 = Reporter.from_env({**env, "RANK": "0"})
    assert isinstance(r0.lease, LeaseClient) and (r0.lease.host, r0.lease.port, r0.lease.path) == (
        "10.0.0.1", 443, "/apis/coordination.k8s.io/v1/namespaces/ml/leases/demo-progress")
    assert (r0.interval, r0.attempt, r0.worker, r0.holder) == (4.0, 3, 1, "demo-3-1")
    assert Reporter.from_env({**env, "RANK": "1"}).lease is None  # only rank 0 sends
    local = Reporter.from_env({"TRAINYARD_PROGRESS_DIR": str(tmp_path / "lease")})
    assert isinstance(local.lease, LeaseDir)
    assert Reporter.from_env({}).lease is None  # no operator: reports go nowhere


@pytest.mark.torch
def test_a_real_training_process_reports_its_steps_and_its_checkpoints(tmp_path):
    """train_synthetic as one process, as the local runtime would start it: its Progress and its
    Checkpointer report through the trainer library into the Lease's stand-in directory."""
    env = base_env(TRAINYARD_PROGRESS_DIR=str(tmp_path / "lease"), TRAINYARD_ATTEMPT="2", TRAINYARD_WORKER_INDEX="0",
                   TRAINYARD_PROGRESS_INTERVAL_SECONDS="1")
    proc = subprocess.run([sys.executable, str(SYNTHETIC), "--hidden", "64", "--layers", "2", "--steps", "30",
                           "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every", "10"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "lease" / "progress.json").read_text())
    assert set(doc) <= set(contract.PROGRESS_FIELDS)
    assert (doc["attempt"], doc["worker"], doc["step"], doc["totalSteps"], doc["training"]) == (2, 0, 30, 30, True)
    assert doc["checkpointStep"] == 30 and doc["startStep"] == 0 and doc["loss"] > 0
