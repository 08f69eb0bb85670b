"""Progress lines (a stable format) and the heartbeat."""

from __future__ import annotations

import io
import os
import time

import pytest
from trainyard_trainer import heartbeat
from trainyard_trainer.progress import (
    CHECKPOINT_RE,
    DONE_RE,
    RESUMED_RE,
    STARTING_RE,
    STEP_RE,
    Progress,
    format_checkpoint,
    format_done,
    format_start,
    format_step,
)


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
