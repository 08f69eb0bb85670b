"""The checkpoint library: atomic writes, integrity, keep-last-K, async saves, fallback on corruption."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from trainyard_trainer import checkpoint as ck
from trainyard_trainer.checkpoint import Checkpointer, CheckpointError, checkpoint_name, snapshot_to_cpu

from .helpers import TRAINER_IMAGE, base_env


def state(step: int, n: int = 8) -> dict:
    return {"w": torch.full((n,), float(step)), "step": step, "nested": {"b": [torch.arange(3) * step, "x"]}}


def files(d) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_names_and_manifest(tmp_path):
    c = Checkpointer(tmp_path)
    path = c.save(state(120), 120)
    assert path.name == "step-00000120.pt" == checkpoint_name(120)
    assert files(tmp_path) == ["step-00000120.pt", "step-00000120.pt.json"]
    doc = json.loads((tmp_path / "step-00000120.pt.json").read_text())
    assert doc["step"] == 120 and doc["size"] == path.stat().st_size
    assert doc["sha256"] == ck.sha256_file(path)[0]
    got, step = c.load_latest()
    assert step == 120 and torch.equal(got["w"], state(120)["w"]) and got["nested"]["b"][1] == "x"


def test_empty_dir_has_nothing(tmp_path):
    assert Checkpointer(tmp_path / "new").load_latest() is None


def test_keep_last_k(tmp_path):
    c = Checkpointer(tmp_path, keep=3)
    for s in range(10, 70, 10):
        c.save(state(s), s)
    assert c.steps() == [40, 50, 60]
    assert len(files(tmp_path)) == 6  # no temp files, no orphaned manifests
    assert c.load_latest()[1] == 60


def test_no_partial_file_under_the_final_name(tmp_path, monkeypatch):
    """A writer that dies mid-write leaves only a temp file: the final name never holds partial data."""
    c = Checkpointer(tmp_path)
    c.save(state(10), 10)

    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk went away")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk went away"):
        c.save(state(20), 20)
    monkeypatch.setattr(torch, "save", real_save)
    assert files(tmp_path) == ["step-00000010.pt", "step-00000010.pt.json"]
    assert c.load_latest()[1] == 10


def test_killed_writer_leaves_the_previous_checkpoint_loadable(tmp_path):
    """A real process SIGKILLed in the middle of writing a big checkpoint."""
    code = textwrap.dedent(
        f"""
        import sys, torch
        from trainyard_trainer.checkpoint import Checkpointer
        c = Checkpointer({str(tmp_path)!r})
        c.save({{"w": torch.ones(4)}}, 1)
        print("first saved", flush=True)
        c.save({{"w": torch.randn(64_000_000)}}, 2)  # 256 MB: long enough to be killed mid-write
        print("second saved", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=base_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "first saved"
    deadline = time.monotonic() + 20
    while not any(p.name.startswith(".step-00000002.pt.tmp-") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "the second save never started"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (tmp_path / "step-00000002.pt").exists()
    c = Checkpointer(tmp_path)
    state_, step = c.load_latest()
    assert step == 1 and torch.equal(state_["w"], torch.ones(4))
    # The next successful save cleans the dead writer's temp file up.
    c.save({"w": torch.zeros(1)}, 3)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_truncated_latest_falls_back_to_previous(tmp_path, caplog):
    c = Checkpointer(tmp_path)
    c.save(state(10), 10)
    c.save(state(20), 20)
    p = tmp_path / "step-00000020.pt"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # truncated under its final name
    with caplog.at_level(logging.WARNING, logger="trainyard.checkpoint"):
        got, step = c.load_latest()
    assert step == 10 and torch.equal(got["w"], state(10)["w"])
    assert "step-00000020.pt" in caplog.text and "truncated" in caplog.text


def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog):
    c = Checkpointer(tmp_path)
    c.save(state(10), 10)
    c.save(state(20), 20)
    p = tmp_path / "step-00000020.pt"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    p.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="trainyard.checkpoint"):
        assert c.load_latest()[1] == 10
    assert "sha256" in caplog.text


def test_unreadable_latest_without_manifest_falls_back(tmp_path):
    """A data file without manifest (a crash between the two renames, or garbage) must load, or be skipped."""
    c = Checkpointer(tmp_path)
    c.save(state(10), 10)
    (tmp_path / "step-00000020.pt").write_bytes(b"not a checkpoint")
    assert c.load_latest()[1] == 10
    torch.save(state(30), tmp_path / "step-00000030.pt")  # complete, just no manifest: accepted
    assert c.load_latest()[1] == 30


def test_snapshot_copies_cpu_tensors():
    t = torch.zeros(4)
    snap = snapshot_to_cpu({"a": t, "l": [t], "od": torch.nn.Linear(2, 2).state_dict()})
    t.add_(1)
    assert torch.equal(snap["a"], torch.zeros(4)) and torch.equal(snap["l"][0], torch.zeros(4))
    assert type(snap["od"]).__name__ == "OrderedDict"


def test_async_save_snapshots_before_returning(tmp_path, monkeypatch):
    """Mutating the live tensor after save() returned does not change what is written."""
    gate = threading.Event()
    real_save = torch.save

    def slow_save(obj, f, *a, **kw):
        gate.wait(10)  # the background write cannot start before the tensor was mutated
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", slow_save)
    c = Checkpointer(tmp_path)
    live = torch.zeros(1000)
    c.save({"w": live}, 5, asynchronous=True)
    live.add_(7)  # training goes on
    gate.set()
    c.wait()
    got, step = c.load_latest()
    assert step == 5 and torch.equal(got["w"], torch.zeros(1000))


def test_at_most_one_async_save_in_flight(tmp_path, monkeypatch):
    active = 0
    peak = 0
    lock = threading.Lock()
    real_save = torch.save

    def counting_save(obj, f, *a, **kw):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        try:
            return real_save(obj, f, *a, **kw)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(torch, "save", counting_save)
    c = Checkpointer(tmp_path, keep=5)
    t0 = time.perf_counter()
    c.save(state(1), 1, asynchronous=True)
    first_stall = c.last_stall_s
    c.save(state(2), 2, asynchronous=True)  # waits for the first
    second_stall = c.last_stall_s
    c.save(state(3), 3, asynchronous=True)
    c.close()
    assert peak == 1
    assert first_stall < second_stall and second_stall >= 0.1  # the first returned at once, the second waited
    assert time.perf_counter() - t0 >= 0.6
    assert c.steps() == [1, 2, 3]


def test_async_error_surfaces_on_next_call(tmp_path, monkeypatch):
    c = Checkpointer(tmp_path)
    real_save, calls = torch.save, []

    def failing_once(obj, f, *a, **kw):  # the first write fails, later ones work
        calls.append(1)
        if len(calls) == 1:
            raise OSError("no space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", failing_once)
    c.save(state(1), 1, asynchronous=True)  # returns: the failure happens in the background
    with pytest.raises(CheckpointError, match="no space left"):
        c.save(state(2), 2, asynchronous=True)
    c.save(state(3), 3, asynchronous=True)  # reported once; the checkpointer keeps working
    c.wait()
    assert c.steps() == [3]


def test_wait_and_close_raise_background_errors(tmp_path, monkeypatch):
    c = Checkpointer(tmp_path)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    c.save(state(1), 1, asynchronous=True)
    with pytest.raises(CheckpointError, match="boom"):
        c.close()
    c.close()  # idempotent


def test_resave_of_the_same_step_replaces_it(tmp_path):
    c = Checkpointer(tmp_path)
    c.save(state(10), 10)
    c.save({"w": torch.ones(2)}, 10)
    got, step = c.load_latest()
    assert step == 10 and torch.equal(got["w"], torch.ones(2))


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        Checkpointer(tmp_path, keep=0)


@pytest.mark.torch
def test_dcp_round_trip_two_processes(tmp_path):
    """save_distributed / load_distributed with 2 real gloo processes (torchrun --standalone)."""
    script = tmp_path / "dcp_check.py"
    script.write_text(textwrap.dedent(
        f"""
        import os, sys, torch, torch.distributed as dist
        from trainyard_trainer.checkpoint import Checkpointer
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        d = {str(tmp_path / "ckpt")!r}
        c = Checkpointer(d, keep=2)
        assert c.load_distributed({{"w": torch.zeros(4)}}) is None
        for step in (10, 20, 30):
            asynchronous = step == 30
            sd = {{"w": torch.full((4,), float(step)), "r": torch.full((2,), float(step + rank)), "step": step}}
            c.save_distributed(sd, step, asynchronous=asynchronous)
            if asynchronous:
                sd["w"].add_(1000)  # after async_save returned: must not reach the checkpoint
        c.wait()
        dist.barrier()
        # a started but never completed save: no marker, must be ignored
        if rank == 0:
            os.makedirs(os.path.join(d, "step-00000040.dcp"))
        dist.barrier()
        target = {{"w": torch.zeros(4), "r": torch.zeros(2), "step": 0}}
        step = c.load_distributed(target)
        assert step == 30, step
        assert torch.equal(target["w"], torch.full((4,), 30.0)), target
        c.close()
        print(f"rank {{rank}} ok step={{step}} w={{target['w'].tolist()}} step_key={{target['step']}}", flush=True)
        dist.destroy_process_group()
        """
    ))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        env=base_env(), capture_output=True, text=True, timeout=120, cwd=TRAINER_IMAGE,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok step=30") == 2
    names = files(tmp_path / "ckpt")
    assert names == ["step-00000020.dcp", "step-00000030.dcp", "step-00000040.dcp"]  # keep=2 complete + the incomplete
    for name in names[:2]:
        assert (tmp_path / "ckpt" / name / ".trainyard-complete").is_file()
        assert (tmp_path / "ckpt" / name / ".metadata").is_file()
    assert not [n for n in os.listdir(tmp_path / "ckpt") if n.endswith(".partial")]


FENCED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from trainyard_trainer.checkpoint import Checkpointer
    directory, attempt, first, stop_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    c = Checkpointer(directory, keep=3, attempt=attempt, rank=0)
    loaded = c.load_latest()
    start = loaded[1] if loaded else first
    print("start", start, flush=True)
    step = start
    while not os.path.exists(stop_file):
        step += 10
        c.save({"w": torch.full((4,), float(attempt)), "step": step}, step)
        print("saved", step, "fenced_out" if c.fenced_out else "", flush=True)
        time.sleep(0.02)
    c.close()
    """
)


def test_a_superseded_attempt_never_becomes_the_latest_checkpoint(tmp_path):
    """Two real writers on one volume: attempt 0 is still saving (its pod terminating) when attempt
    1 starts and resumes. After attempt 1's first load, no checkpoint of attempt 0 past the step
    attempt 1 resumed from is ever the latest, and attempt 0 stops publishing."""
    script = tmp_path / "writer.py"
    script.write_text(FENCED_WRITER)
    ckpt, stop0, stop1 = tmp_path / "ckpt", tmp_path / "stop0", tmp_path / "stop1"
    env = {**base_env()}
    old = subprocess.Popen([sys.executable, str(script), str(ckpt), "0", "0", str(stop0)], env=env,
                           stdout=subprocess.PIPE, text=True)
    try:
        while True:  # attempt 0 has a few checkpoints
            line = old.stdout.readline()
            assert line, "attempt 0 died"
            if line.startswith("saved 50"):
                break
        new = subprocess.Popen([sys.executable, str(script), str(ckpt), "1", "0", str(stop1)], env=env,
                               stdout=subprocess.PIPE, text=True)
        resumed = int(new.stdout.readline().split()[1])
        assert resumed >= 50
        seen_new = 0
        observer = Checkpointer(ckpt, attempt=99, rank=1)  # reads only (rank 1 never fences)
        while seen_new < 10:
            line = new.stdout.readline()
            assert line, "attempt 1 died"
            seen_new += line.startswith("saved")
            latest = observer._find_latest("cpu", True)
            if latest is not None:
                state, step = latest
                writer = int(state["w"][0].item())
                assert writer == 1 or step <= resumed, f"attempt 0's step {step} is the latest after the fence"
        stop0.write_text("")
        old_out, _ = old.communicate(timeout=60)
        old_lines = old_out.splitlines()
        assert any("fenced_out" in x for x in old_lines), old_lines[-5:]
        entries = Checkpointer(ckpt, attempt=99, rank=1).entries()
        assert entries and all(e.attempt == 1 or e.step <= resumed for e in entries)
    finally:
        for p, stop in ((old, stop0), (locals().get("new"), stop1)):
            if p is not None and p.poll() is None:
                stop.write_text("")
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()


def test_a_new_job_on_an_old_jobs_checkpoints_takes_the_directory_over(tmp_path):
    """A re-created job (or a second `trainyard run`, or a resize to a new job) starts at attempt 0
    on a directory that an older job fenced at attempt 2. Attempt numbers restart, so they cannot
    order the two: the new job is newer than every writer that fenced before it. Its saves are
    published and become the latest; the old job's writer that is still alive stops publishing."""
    def save(c: Checkpointer, step: int, w: float) -> None:
        c.save({"w": torch.full((2,), w), "step": step}, step)

    for attempt in range(3):
        old = Checkpointer(tmp_path, keep=3, attempt=attempt, job="uid-old", rank=0)
        old.load_latest()
        save(old, 10 * (attempt + 1), 0.0)
    assert [f["attempt"] for f in old.fences()] == [0, 1, 2]

    new = Checkpointer(tmp_path, keep=3, attempt=0, job="uid-new", rank=0)
    state, step = new.load_latest()
    assert step == 30
    save(new, 40, 1.0)
    assert not new.fenced_out
    assert new.steps()[-1] == 40
    # the old job's attempt 2 is still up: its next save is not published
    save(old, 50, 0.0)
    assert old.fenced_out
    assert new.steps()[-1] == 40
    state, step = Checkpointer(tmp_path, job="uid-reader", attempt=0, rank=1).load_latest()
    assert (step, state["w"][0].item()) == (40, 1.0)
    assert [e.job for e in new.entries()][-1] == "uid-new"


def test_the_same_job_still_orders_writers_by_attempt_after_a_takeover(tmp_path):
    """Within one job a late, older attempt stays superseded even after another job fenced."""
    a0 = Checkpointer(tmp_path, attempt=0, job="j1", rank=0)
    a0.load_latest()
    a1 = Checkpointer(tmp_path, attempt=1, job="j1", rank=0)
    a1.load_latest()
    a0.save({"step": 10}, 10)
    assert a0.fenced_out and a1.steps() == []
    a1.save({"step": 10}, 10)
    assert a1.steps() == [10]
