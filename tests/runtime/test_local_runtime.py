"""The workstation runtime with real processes: the engine's rules applied to process trees.

These use tiny Python workers (no torch) to pin the runtime's mechanics; tests/runtime/test_training.py
trains for real with torch and gloo.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml
from rich.text import Text

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.local.injection import Injection
from trainyard.local.runner import Runner, load_job

TRAINYARD = str(Path(sys.executable).with_name("trainyard"))


def write_job(tmp: Path, script: str, workers: int = 2, **spec) -> Path:
    (tmp / "worker.py").write_text(textwrap.dedent(script))
    body = {
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob", "metadata": {"name": "tiny"},
        "spec": {"workers": workers, **spec,
                 "template": {"spec": {"containers": [{"name": "trainer", "image": "local",
                                                       "command": [sys.executable, str(tmp / "worker.py")]}]}}},
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def run(tmp: Path, path: Path, injection: Injection | None = None, workers: int | None = None):
    runner = Runner(load_job(path, workers), tmp / "work", tmp / "ckpt", injection, tick=0.05)
    (tmp / "ckpt").mkdir(exist_ok=True)
    return runner.run()


STEPS = """
    import os, sys, time
    for i in range(int(os.environ.get("STEPS", "6"))):
        print(f"[trainyard] step={i}", flush=True)
        time.sleep(0.1)
"""


def test_workers_get_the_operators_env_with_a_local_rendezvous(tmp_path):
    path = write_job(tmp_path, """
        import json, os
        keep = {k: v for k, v in os.environ.items() if k.startswith(("PET_", "TRAINYARD_"))}
        open(os.environ["TRAINYARD_CHECKPOINT_DIR"] + f"/env-{os.environ['TRAINYARD_WORKER_INDEX']}.json", "w").write(json.dumps(keep))
    """, workers=2, runPolicy={"progressDeadlineSeconds": 60})
    result = run(tmp_path, path)
    assert result.job.status.phase == Phase.SUCCEEDED
    env0 = yaml.safe_load((tmp_path / "ckpt" / "env-0.json").read_text())
    env1 = yaml.safe_load((tmp_path / "ckpt" / "env-1.json").read_text())
    uid = result.job.metadata.uid
    host, port = env0["PET_RDZV_ENDPOINT"].split(":")
    assert host == "127.0.0.1" and env1["PET_RDZV_ENDPOINT"] == env0["PET_RDZV_ENDPOINT"] and int(port) > 0
    assert {k: v for k, v in env0.items() if k not in ("PET_RDZV_ENDPOINT", "TRAINYARD_HEARTBEAT_FILE")} == {
        "PET_NNODES": "2:2", "PET_NPROC_PER_NODE": "1", "PET_RDZV_BACKEND": "c10d", "PET_RDZV_ID": f"{uid}-0",
        "PET_RDZV_CONF": "join_timeout=600,is_host=true", "PET_MAX_RESTARTS": "0", "TRAINYARD_JOB_NAME": "tiny",
        "TRAINYARD_JOB_UID": uid,
        "TRAINYARD_WORKER_INDEX": "0", "TRAINYARD_ATTEMPT": "0", "TRAINYARD_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        # the launcher's watchdog is the engine's backstop: 30 s after the deadline and the startup budget
        "TRAINYARD_PROGRESS_DEADLINE_SECONDS": "90", "TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS": "630",
        # the job's Lease, as the local runtime has it
        "TRAINYARD_PROGRESS_DIR": str(tmp_path / "work" / "lease"), "TRAINYARD_PROGRESS_INTERVAL_SECONDS": "10"}
    assert env1["PET_RDZV_CONF"] == "join_timeout=600,is_host=false"
    assert env0["TRAINYARD_HEARTBEAT_FILE"] != env1["TRAINYARD_HEARTBEAT_FILE"]


def test_killed_worker_restarts_the_gang_with_a_new_rendezvous_id(tmp_path):
    path = write_job(tmp_path, STEPS + """
    import os
    open(os.environ["TRAINYARD_CHECKPOINT_DIR"] + "/rdzv-" + os.environ["TRAINYARD_ATTEMPT"], "w").write(os.environ["PET_RDZV_ID"])
    """, failurePolicy={"restartPolicy": "ExitCode"})
    result = run(tmp_path, path, Injection.parse("worker=1,at-step=2"))
    st = result.job.status
    assert (st.phase, st.restarts, st.attempt) == (Phase.SUCCEEDED, 1, 1)
    assert [e.reason for e in result.events] == [
        R.ALL_WORKERS_RUNNING, "InjectedFailure", R.WORKER_FAILED, R.ALL_WORKERS_RUNNING, R.ALL_WORKERS_SUCCEEDED]
    uid = result.job.metadata.uid
    assert (tmp_path / "ckpt" / "rdzv-1").read_text() == f"{uid}-1"
    assert "exited with code 137 (killed by SIGKILL)" in result.events[2].message


def test_non_retryable_exit_code_fails_with_the_reason(tmp_path):
    path = write_job(tmp_path, """
        import os, sys, time
        if os.environ["TRAINYARD_WORKER_INDEX"] == "1":
            sys.exit(3)
        time.sleep(30)
    """, failurePolicy={"restartPolicy": "ExitCode"})
    result = run(tmp_path, path)
    st = result.job.status
    assert st.phase == Phase.FAILED
    assert st.condition("Failed").reason == R.NON_RETRYABLE_EXIT_CODE
    assert st.message.startswith("worker 1 (pod tiny-0-1) exited with code 3")
    assert st.restarts == 0


def test_backoff_limit_and_backoff_delay(tmp_path):
    path = write_job(tmp_path, "import sys; sys.exit(1)\n", workers=1,
                     failurePolicy={"backoffLimit": 2, "backoffSeconds": 1})
    result = run(tmp_path, path)
    st = result.job.status
    assert (st.phase, st.restarts, st.attempt) == (Phase.FAILED, 2, 2)
    assert st.condition("Failed").reason == R.BACKOFF_LIMIT_EXCEEDED
    # the second restart waited for its backoff: its worker started at least 1 s after the first restart's
    starts = [(tmp_path / "work" / f"attempt-{a}" / "worker-0.log").stat().st_mtime for a in (1, 2)]
    assert starts[1] - starts[0] >= 1.0


def test_active_deadline(tmp_path):
    path = write_job(tmp_path, "import time; time.sleep(60)\n", workers=1, runPolicy={"activeDeadlineSeconds": 1})
    result = run(tmp_path, path)
    assert result.job.status.condition("Failed").reason == R.DEADLINE_EXCEEDED


def test_worker_that_stops_making_progress_is_detected_and_the_gang_restarted(tmp_path):
    # attempt 0: rank 0 reports two steps through the trainer library, then hangs without exiting;
    # attempt 1 finishes. The engine judges it from the report (the launcher is not even involved).
    path = write_job(tmp_path, """
        import os, time
        from trainyard_trainer import progress
        progress.start(0, total_steps=2)
        for i in range(1, 3):
            progress.report(i, loss=1.0 / i); print(f"[trainyard] step={i}", flush=True); time.sleep(0.1)
        progress.flush()
        if os.environ["TRAINYARD_ATTEMPT"] == "0":
            time.sleep(120)
    """, workers=2, runPolicy={"progressDeadlineSeconds": 2, "firstProgressDeadlineSeconds": 60})
    result = run(tmp_path, path)
    st = result.job.status
    assert (st.phase, st.restarts, st.attempt) == (Phase.SUCCEEDED, 1, 1)
    hung = [e for e in result.events if e.reason == R.HUNG]
    assert len(hung) == 1 and "no training step reported for 2s since step 2" in hung[0].message
    assert "progressDeadlineSeconds=2" in hung[0].message
    assert (st.progress.step, st.progress.attempt, st.progress.stale) == (2, 1, None)


SLOW_START = """
    import os, time
    from trainyard_trainer import progress
    progress.start(0, total_steps=3)
    if os.environ["TRAINYARD_ATTEMPT"] == "{never}":
        time.sleep(120)  # started, and never steps
    time.sleep({first})  # the first step's time
    for i in range(1, 4):
        progress.report(i); time.sleep(0.5)
    progress.flush()
"""


def test_a_slow_first_step_is_not_a_hang(tmp_path):
    # The first step takes 4 s, twice the progress deadline: within the startup budget it is no hang.
    path = write_job(tmp_path, SLOW_START.format(never=-1, first=4), workers=2,
                     runPolicy={"progressDeadlineSeconds": 2, "firstProgressDeadlineSeconds": 30})
    result = run(tmp_path, path)
    assert (result.job.status.phase, result.job.status.restarts) == (Phase.SUCCEEDED, 0), result.job.status.message
    assert result.job.status.progress.step == 3


def test_a_gang_that_starts_but_never_steps_is_hung_at_the_end_of_the_startup_budget(tmp_path):
    path = write_job(tmp_path, SLOW_START.format(never=0, first=0), workers=2,
                     runPolicy={"progressDeadlineSeconds": 2, "firstProgressDeadlineSeconds": 3})
    result = run(tmp_path, path)
    hung = [e.message for e in result.events if e.reason == R.HUNG]
    assert (result.job.status.phase, result.job.status.restarts) == (Phase.SUCCEEDED, 1), result.job.status.message
    assert len(hung) == 1 and "no training step reported within 3s after its trainer (re)started at step 0" in hung[0]
    assert "spec.runPolicy.firstProgressDeadlineSeconds=3" in hung[0]


def test_invalid_yaml_is_one_clear_line_on_stderr(tmp_path):
    path = write_job(tmp_path, STEPS, workers=2, failurePolicy={"restartScope": "Worker", "inPlaceRestarts": 1})
    out = subprocess.run([TRAINYARD, "run", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        f"error: {path}: spec.failurePolicy.restartScope: Invalid value: spec.failurePolicy.restartScope Worker needs "
        "spec.elastic: a fixed-size torchrun group cannot take a replacement worker"]


def test_ctrl_c_leaves_no_process_behind(tmp_path):
    path = write_job(tmp_path, """
        import subprocess, sys, time
        # a grandchild too, as torchrun would start
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("[trainyard] step=0", flush=True)
        time.sleep(300)
    """, workers=2)
    proc = subprocess.Popen([TRAINYARD, "run", str(path)], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    # Each worker prints its step line only after its grandchild exists: wait for both lines, not
    # for a moment when the tree might be complete.
    started = set()
    for line in proc.stdout:
        if "| [trainyard] step=0" in line:
            started.add(line.split("|")[0].strip())
        if len(started) == 2:
            break
    assert len(started) == 2, f"the workers never started (exit {proc.poll()})"
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert len(tree) == 4, tree  # 2 workers and 2 grandchildren
    os.kill(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR2)  # its stack on stderr (faulthandler), in this test's report
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        for p in [psutil.Process(proc.pid), *tree]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        pytest.fail(f"trainyard run did not end within 30 s of Ctrl-C; still alive: {psutil.wait_procs(tree, 0)[1]}")
    assert code == 130
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []


def test_workers_override_is_checked_against_elastic_bounds(tmp_path):
    path = write_job(tmp_path, STEPS, workers=2, elastic={"minWorkers": 1, "maxWorkers": 2})
    with pytest.raises(ValueError, match="spec.workers must lie within"):
        load_job(path, workers=3)
    assert load_job(path, workers=1).spec.workers == 1


def test_injection_parsing():
    assert Injection.parse("worker=1,after=30s") == Injection(worker=1, after=30.0)
    assert Injection.parse("worker=0,at-step=40,signal=TERM") == Injection(worker=0, at_step=40, sig=signal.SIGTERM)
    assert Injection.parse("worker=1,after=2.5,signal=sigint", workers=2) == Injection(worker=1, after=2.5,
                                                                                       sig=signal.SIGINT)
    for bad, why in [("worker=1", "expected worker=N"), ("worker=2,after=1s", "there is no worker 2"),
                     ("worker=-1,after=1s", "worker must be a worker index"), ("worker=0,after=1m", "after must be"),
                     ("worker=0,at-step=x", "at-step must be"), ("worker=0,after=1,signal=NOPE", "unknown signal"),
                     ("worker=0,after=1,when=now", "unknown key when")]:
        with pytest.raises(ValueError, match=why):
            Injection.parse(bad, workers=2)


def test_running_means_training_after_a_restart(tmp_path):
    """Issue 11, repro 10: up is not training. The restarted gang is Running only once it trains."""
    path = write_job(tmp_path, """
        import os, time
        if os.environ["TRAINYARD_ATTEMPT"] != "0":
            time.sleep(1.5)  # a restarted gang's start-up: imports, rendezvous, checkpoint load
        for i in range(8):
            print(f"[trainyard] step={i}", flush=True)
            time.sleep(0.2)
    """, workers=2)
    order: list[str] = []
    runner = Runner(load_job(path), tmp_path / "work", tmp_path / "ckpt", Injection.parse("worker=1,at-step=2"),
                    tick=0.05, on_event=lambda ev: order.append(ev.reason),
                    on_line=lambda w, line: order.append(f"step@{w.launch.attempt}") if "step=" in line else None)
    (tmp_path / "ckpt").mkdir()
    result = runner.run()
    assert result.job.status.phase == Phase.SUCCEEDED
    restart = order.index(R.WORKER_FAILED)
    after = order[restart:]
    assert after.index(R.ALL_WORKERS_RUNNING) > after.index("step@1"), after


def test_time_to_first_step_is_when_the_first_step_line_came(tmp_path):
    # The worker notes the (system-wide) monotonic clock just before it prints each step: the
    # runner cannot have seen step 0 earlier, and it reports it before it hands the line on.
    path = write_job(tmp_path, """
        import os, time
        time.sleep(0.5)
        for i in range(3):
            open(os.environ["TRAINYARD_CHECKPOINT_DIR"] + f"/printed-{i}", "w").write(repr(time.monotonic()))
            print(f"[trainyard] step={i}", flush=True)
            time.sleep(0.2)
    """, workers=1)
    seen: dict[str, float] = {}
    runner = Runner(load_job(path), tmp_path / "work", tmp_path / "ckpt", tick=0.05,
                    on_line=lambda w, line: seen.setdefault(line, time.monotonic() - runner._t0))
    (tmp_path / "ckpt").mkdir()
    result = runner.run()
    printed = float((tmp_path / "ckpt" / "printed-0").read_text()) - runner._t0
    assert 0.5 <= printed <= result.first_step_seconds <= seen["[trainyard] step=0"] <= seen["[trainyard] step=2"]


def test_the_live_view_prints_event_messages_as_written(tmp_path):
    """rich markup would eat "[trainer]": the live view's lines are text, never markup."""
    from io import StringIO

    from rich.console import Console

    from trainyard.engine.plan import Event
    from trainyard.local.view import View

    runner = Runner(load_job(write_job(tmp_path, STEPS, workers=1)), tmp_path / "work", tmp_path / "ckpt")
    out = StringIO()
    view = View(Console(file=out, force_terminal=True, width=200))
    assert view.live
    view.event(Event("Warning", "WorkerFailed", "container [trainer] of [bold]pod[/bold] exited"))
    view.console.print(view.render(runner))
    assert "container [trainer] of [bold]pod[/bold] exited" in Text.from_ansi(out.getvalue()).plain


def test_the_live_view_shows_a_progress_bar_with_step_total_and_eta(tmp_path):
    """The view reads rank 0's newest report (the Lease's stand-in), unthrottled, as status.progress says it."""
    from io import StringIO

    from rich.console import Console

    from trainyard.local.view import View

    path = write_job(tmp_path, """
        import time
        from trainyard_trainer import progress
        progress.start(0, total_steps=40)
        for i in range(1, 41):
            progress.report(i, loss=1.0 / i, samples=8); time.sleep(0.1)
        progress.flush()
    """, workers=1, runPolicy={"progressDeadlineSeconds": 5})  # reports every second
    runner = Runner(load_job(path), tmp_path / "work", tmp_path / "ckpt", tick=0.05)
    (tmp_path / "ckpt").mkdir()
    view = View(Console(file=StringIO(), force_terminal=True, width=200))
    frames: list[str] = []

    def frame() -> None:
        out = StringIO()
        Console(file=out, width=200).print(view.render(runner))
        frames.append(out.getvalue())

    runner.run(between=frame)
    bars = [f for f in frames if re.search(r"█+░* step \d+/40 \(\d+(\.\d)?%\), ETA \d+s", f)]
    assert bars, frames[-3:]
    steps = {int(m.group(1)) for f in bars for m in [re.search(r"step (\d+)/40", f)]}
    assert len(steps) >= 2  # it moved while the job ran
