"""`trainyard run` trains for real: torch processes, gloo on CPU, the example digits script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.local.injection import Injection
from trainyard.local.runner import Runner, load_job

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[2]
TRAINYARD = str(Path(sys.executable).with_name("trainyard"))


def digits_job(tmp: Path, *args: str, workers: int = 2, **spec) -> Path:
    example = yaml.safe_load((REPO / "examples" / "digits-ddp.yaml").read_text())
    example["spec"]["workers"] = workers
    trainer = example["spec"]["template"]["spec"]["containers"][0]
    trainer["args"] = list(args)
    for k, v in spec.items():
        example["spec"].setdefault(k, {}).update(v)
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(example))
    return path


def run(tmp: Path, path: Path, injection: Injection | None = None):
    (tmp / "ckpt").mkdir(exist_ok=True)
    return Runner(load_job(path), tmp / "work", tmp / "ckpt", injection, tick=0.05).run()


def test_two_workers_train_and_agree_on_the_weights(tmp_path):
    path = digits_job(tmp_path, "--epochs", "2", "--weights-out", str(tmp_path / "w"))
    result = run(tmp_path, path)
    assert result.job.status.phase == Phase.SUCCEEDED, result.job.status.message
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "w").glob("rank-*.json"))]
    assert len(ranks) == 2
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert result.final is not None and "accuracy=" in result.final


def test_kill_9_recovers_and_resumes_from_the_checkpoint(tmp_path):
    path = digits_job(tmp_path, "--epochs", "4", "--checkpoint-every", "20", "--step-delay", "0.05")
    result = run(tmp_path, path, Injection.parse("worker=1,at-step=70"))
    st = result.job.status
    assert (st.phase, st.restarts, st.attempt) == (Phase.SUCCEEDED, 1, 1), st.message
    assert result.resumed_from == 60  # the last checkpoint before the kill, not step 0
    reasons = [e.reason for e in result.events]
    assert reasons[reasons.index("InjectedFailure") + 1] == R.WORKER_FAILED


def test_corrupt_latest_checkpoint_resumes_from_the_previous_one(tmp_path):
    first = run(tmp_path, digits_job(tmp_path, "--max-steps", "40", "--checkpoint-every", "20"))
    assert first.job.status.phase == Phase.SUCCEEDED
    newest = sorted((tmp_path / "ckpt").glob("step-*.pt"))[-1]
    assert newest.name == "step-00000040.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated, as by a crash

    lines: list[str] = []
    second = Runner(load_job(digits_job(tmp_path, "--max-steps", "60", "--checkpoint-every", "20")),
                    tmp_path / "work2", tmp_path / "ckpt", tick=0.05, on_line=lambda w, line: lines.append(line))
    result = second.run()
    assert result.job.status.phase == Phase.SUCCEEDED
    assert any("resumed from step=20" in line for line in lines), [x for x in lines if "[trainyard]" in x][:5]


def test_fixed_size_job_never_waits_for_a_last_call(tmp_path):
    # With an hour-long last-call timeout, a job that waited for a last call would never start.
    path = digits_job(tmp_path, "--max-steps", "10", rendezvous={"lastCallTimeoutSeconds": 3600})
    result = run(tmp_path, path)
    assert result.job.status.phase == Phase.SUCCEEDED
    env = (tmp_path / "work" / "attempt-0" / "worker-0.log").read_text()
    assert "Traceback" not in env


def test_ctrl_c_stops_real_training_with_no_orphans(tmp_path):
    path = digits_job(tmp_path, "--epochs", "50", "--step-delay", "0.05")
    proc = subprocess.Popen([TRAINYARD, "run", str(path), "--workdir", str(tmp_path / "w"),
                             "--checkpoint-dir", str(tmp_path / "c")], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    for line in proc.stdout:
        if "[trainyard] step=" in line:
            break
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert len(tree) >= 6  # per worker: launcher, torchrun agent, training process
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(60) == 130
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert alive == []


def test_a_stopped_worker_is_detected_as_hung_and_the_gang_restarted(tmp_path):
    # SIGSTOP freezes one training process without exiting: its peer blocks in allreduce, nobody
    # beats the heartbeat, and the job must notice instead of waiting for gloo's 30-minute timeout.
    # The deadline is for steps only: a gang's start (torch's import, the rendezvous, the first step),
    # which takes long on a busy 2-core machine, has its own budget.
    path = digits_job(tmp_path, "--epochs", "3", "--step-delay", "0.02",
                      runPolicy={"progressDeadlineSeconds": 10, "firstProgressDeadlineSeconds": 300})
    stopped = []

    def on_line(w, line):
        if "[trainyard] step=30" in line and not stopped:
            trainers = [p for p in psutil.Process(w.proc.pid).children(recursive=True)
                        if "train_digits" in " ".join(p.cmdline()) and "torch.distributed.run" not in " ".join(p.cmdline())]
            for p in trainers:
                p.suspend()
            stopped.extend(trainers)

    runner = Runner(load_job(path), tmp_path / "work", tmp_path / "ckpt", tick=0.05, on_line=on_line)
    (tmp_path / "ckpt").mkdir()
    result = runner.run()
    st = result.job.status
    assert stopped, "no training process was stopped"
    assert (st.phase, st.restarts) == (Phase.SUCCEEDED, 1), st.message
    hung = [e.message for e in result.events if e.reason == R.HUNG]
    assert len(hung) == 1 and "no training step reported for 10s since step" in hung[0], hung  # the engine's, not exit 86


def test_worker_scope_replaces_one_worker_and_the_survivors_re_form_the_group(tmp_path):
    """restartScope Worker with real torchrun: the killed worker alone is replaced; the survivors'
    agents restart their training processes in place and re-rendezvous with the replacement."""
    path = digits_job(tmp_path, "--epochs", "4", "--checkpoint-every", "20", "--step-delay", "0.05", workers=3,
                      elastic={"minWorkers": 2, "maxWorkers": 3},
                      failurePolicy={"restartPolicy": "OnFailure", "restartScope": "Worker", "inPlaceRestarts": 3})
    (tmp_path / "ckpt").mkdir()
    survivors: dict[int, int] = {}

    def on_line(w, line):
        if w.launch.attempt == 0 and w.launch.index != 1:
            survivors.setdefault(w.launch.index, w.proc.pid)

    runner = Runner(load_job(path), tmp_path / "work", tmp_path / "ckpt", Injection.parse("worker=1,at-step=50"),
                    tick=0.05, on_line=on_line)
    result = runner.run()
    st = result.job.status
    assert (st.phase, st.restarts, st.attempt, st.rendezvous_attempt) == (Phase.SUCCEEDED, 1, 1, 0), st.message
    # the survivors' pods (launchers) were never replaced: only worker 1 has a second attempt
    attempts = sorted(p.parent.name + "/" + p.name for p in (tmp_path / "work").glob("attempt-*/worker-*.log"))
    assert attempts == ["attempt-0/worker-0.log", "attempt-0/worker-1.log", "attempt-0/worker-2.log",
                        "attempt-1/worker-1.log"], attempts
    assert result.resumed_from is not None and result.resumed_from >= 40, result.resumed_from
