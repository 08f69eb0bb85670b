"""trainyard_trainer.warm: which commands a spare can run, the env it gives the rank, the exit codes
it reports, and a real spare process (torch imported for real) running a script handed to it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from trainyard_trainer import contract
from trainyard_trainer.launch import RootCauseScanner
from trainyard_trainer.warm import Target, Unsupported, exit_code_of, script_imports, target_of, torchrun_env

from .helpers import TRAINER_IMAGE


@pytest.mark.parametrize(("command", "want"), [
    (["trainyard-launch", "-m", "pkg.train", "--lr", "1"], Target("module", "pkg.train", ("--lr", "1"))),
    (["/usr/local/bin/trainyard-launch", "train.py", "-m", "x"], Target("path", "train.py", ("-m", "x"))),
    (["torchrun", "train.py"], Target("path", "train.py", ())),
    (["torchrun", "--nnodes", "2:2", "--nproc-per-node=1", "-m", "m", "a"], Target("module", "m", ("a",))),
    (["python", "-u", "train.py", "--epochs", "3"], Target("path", "train.py", ("--epochs", "3"))),
    (["python3.11", "-m", "torch.distributed.run", "--nproc_per_node", "1", "t.py"], Target("path", "t.py", ())),
])
def test_commands_a_spare_runs(command, want):
    assert target_of(command) == want


@pytest.mark.parametrize(("command", "why"), [
    ([], "no command"),
    (["bash", "-c", "python train.py"], "bash is not trainyard-launch, torchrun or python"),
    (["torchrun", "--max-restarts", "3", "t.py"], "--max-restarts needs torchrun's agent"),
    (["torchrun", "--nproc-per-node", "2", "t.py"], "--nproc-per-node=2 needs torchrun's agent"),
    (["python", "-c", "print(1)"], "option -c is not supported"),
    (["trainyard-launch", "-m"], "names no module"),
])
def test_commands_a_spare_refuses_say_why(command, why):
    with pytest.raises(Unsupported, match=why):
        target_of(command)


def test_the_rank_gets_torchruns_env_from_the_operators_contract():
    env = torchrun_env({"RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "h", "MASTER_PORT": "29400",
                        "PET_RDZV_ID": "uid-3", "PET_MAX_RESTARTS": "0", "KEEP": "me"})
    assert {k: env[k] for k in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "GROUP_WORLD_SIZE",
                                "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                                "TORCHELASTIC_USE_AGENT_STORE", "KEEP")} == {
        "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "1", "ROLE_RANK": "1", "GROUP_WORLD_SIZE": "4",
        "ROLE_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "uid-3", "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_USE_AGENT_STORE": "False", "KEEP": "me"}


def test_a_rank_sentence_is_not_a_rank():
    """Elastic or multi-process jobs get a sentence in RANK (engine/env.py): no spare can run them."""
    with pytest.raises(Unsupported, match="only torchrun can start this job"):
        torchrun_env({"RANK": "set by torchrun for each process", "WORLD_SIZE": "x", "MASTER_ADDR": "h",
                      "MASTER_PORT": "1"})


def test_exit_codes_are_the_launchers():
    assert exit_code_of(SystemExit(None)) == 0
    assert exit_code_of(SystemExit(3)) == 3
    assert exit_code_of(SystemExit("bad")) == 1
    assert exit_code_of(ValueError("bad learning rate")) == 1
    assert exit_code_of(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1")) \
        == contract.PEER_LOST_EXIT_CODE


def test_script_imports_are_read_not_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import os, json as j\nfrom collections import abc\nraise SystemExit('never run')\n"
                      "def f():\n    import email\n")
    assert script_imports(Target("path", str(script), ())) == ["os", "json", "collections"]
    mods = script_imports(Target("module", "trainyard_trainer.examples.train_digits", ()))
    assert {"torch", "sklearn.datasets", "trainyard_trainer.checkpoint"} <= set(mods)


def test_the_launcher_acts_on_torchruns_verdict_without_waiting_for_its_exit():
    now = [0.0]
    s = RootCauseScanner(clock=lambda: now[0])
    for line in ["Root Cause (first observed failure):", "[0]:", "  rank      : 1 (local_rank: 0)"]:
        s.feed(line)
    assert not s.verdict_due(now[0], 0.3)
    s.feed("  exitcode  : -9 (pid: 12)")
    now[0] = 0.1
    assert s.exitcode == -9 and not s.verdict_due(now[0], 0.3)
    now[0] = 0.5
    assert s.verdict_due(now[0], 0.3)  # the closing rule never came: the exit code line is enough
    t = RootCauseScanner(clock=lambda: 0.0)
    for line in ["Root Cause (first observed failure):", "  exitcode  : 1 (pid: 3)", "=" * 60]:
        t.feed(line)
    assert t.verdict_due(0.0, 0.3)


@pytest.mark.torch
def test_a_spare_runs_the_script_it_is_handed_with_torchruns_env(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        import torch  # already imported by the spare
        print(json.dumps({k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MINE")}))
        print("argv", sys.argv[1:], "main", __name__)
        sys.exit(int(sys.argv[1]))
    """))
    ours, theirs = socket.socketpair()
    env = {**os.environ, contract.ENV_WARM_FD: str(theirs.fileno()),
           "PYTHONPATH": os.pathsep.join([str(TRAINER_IMAGE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "trainyard_trainer.warm", "--", "python", str(script), "7"], env=env,
                            pass_fds=[theirs.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    theirs.close()
    try:
        ours.settimeout(300)
        said = ours.recv(100).decode()
        assert said.startswith(f"ready {proc.pid} ")
        log = tmp_path / "worker.log"
        rank_env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1",
                    "PET_RDZV_ID": "u-2", "MINE": "yes", "PATH": os.environ["PATH"]}
        ours.sendall(json.dumps({"env": rank_env, "cwd": str(tmp_path), "log": str(log)}).encode() + b"\n")
        assert proc.wait(120) == 7
    finally:
        proc.kill()
    out = log.read_text()
    assert json.dumps({"RANK": "1", "LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "u-2", "MINE": "yes"}) in out
    assert "argv ['7'] main __main__" in out


def test_a_spare_says_unsupported_and_exits_for_a_command_it_cannot_run():
    ours, theirs = socket.socketpair()
    env = {**os.environ, contract.ENV_WARM_FD: str(theirs.fileno()),
           "PYTHONPATH": os.pathsep.join([str(TRAINER_IMAGE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "trainyard_trainer.warm", "--", "bash", "-c", "true"], env=env,
                          pass_fds=[theirs.fileno()], capture_output=True, timeout=60)
    theirs.close()
    assert proc.returncode == 0
    assert ours.recv(200).decode().startswith("unsupported bash is not trainyard-launch")
