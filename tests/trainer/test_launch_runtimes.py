"""The launcher's tensorflow runtime (TRAINYARD_RUNTIME=tensorflow): no torchrun, the script runs as the
worker itself after every TF_CONFIG host resolves. Nothing here needs torch or tensorflow."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap

import pytest
from trainyard_trainer.launch import DEFAULT_JOIN_TIMEOUT, LaunchConfig, build_argv, parse_tf_config_hosts

from .helpers import base_env, launcher_cmd

TF_CONFIG = json.dumps({
    "cluster": {"worker": ["tfj-2-0.tfj.ml.svc:2222", "tfj-2-1.tfj.ml.svc:2222"]},
    "task": {"type": "worker", "index": 1},
})


def test_tensorflow_config_from_pod_env():
    env = {"TRAINYARD_RUNTIME": "tensorflow", "TF_CONFIG": TF_CONFIG, "TRAINYARD_JOIN_TIMEOUT_SECONDS": "120",
           "PET_RDZV_ENDPOINT": "ignored:29400", "PET_RDZV_CONF": "join_timeout=5"}
    cfg = LaunchConfig.from_env(["-m", "trainyard_trainer.examples.train_tf_digits", "--epochs", "3"], env)
    assert cfg.runtime == "tensorflow" and cfg.endpoint_host is None and cfg.join_timeout == 120
    assert cfg.peers == (("tfj-2-0.tfj.ml.svc", 2222), ("tfj-2-1.tfj.ml.svc", 2222))
    # No torchrun: the script (here a module) is the worker; its args are untouched.
    assert build_argv(cfg, "py") == ["py", "-m", "trainyard_trainer.examples.train_tf_digits", "--epochs", "3"]


def test_tensorflow_config_defaults():
    cfg = LaunchConfig.from_env(["train.py"], {"TRAINYARD_RUNTIME": "TensorFlow"})
    assert cfg.runtime == "tensorflow" and cfg.peers == () and cfg.join_timeout == DEFAULT_JOIN_TIMEOUT
    assert build_argv(cfg, "py") == ["py", "train.py"]
    assert LaunchConfig.from_env(["train.py"], {}).runtime == "torchrun"  # the default stays torchrun


def test_unknown_runtime_and_bad_tf_config_are_errors():
    with pytest.raises(ValueError, match="TRAINYARD_RUNTIME='horovod'"):
        LaunchConfig.from_env(["t.py"], {"TRAINYARD_RUNTIME": "horovod"})
    with pytest.raises(ValueError, match="not JSON"):
        LaunchConfig.from_env(["t.py"], {"TRAINYARD_RUNTIME": "tensorflow", "TF_CONFIG": "{"})
    with pytest.raises(ValueError, match="cluster"):
        parse_tf_config_hosts('{"task": {"type": "worker", "index": 0}}')


def test_tf_config_hosts_of_every_role_in_order_without_duplicates():
    raw = json.dumps({"cluster": {"chief": ["c-0:2222"], "ps": ["p-0:2222"], "worker": ["w-0:2222", "w-1:2222", "w-0:2222"]},
                      "task": {"type": "ps", "index": 0}})
    assert parse_tf_config_hosts(raw) == (("c-0", 2222), ("p-0", 2222), ("w-0", 2222), ("w-1", 2222))
    assert parse_tf_config_hosts(None) == parse_tf_config_hosts("") == ()


EXITER = "import os, signal, sys\nif sys.argv[1] == 'segv':\n    os.kill(os.getpid(), signal.SIGSEGV)\nsys.exit(int(sys.argv[1]))\n"


@pytest.mark.parametrize(("arg", "code"), [("0", 0), ("3", 3), ("segv", 139)])
def test_tensorflow_runtime_exit_code_is_the_workers(tmp_path, arg, code):
    script = tmp_path / "exiter.py"
    script.write_text(EXITER)
    env = base_env(TRAINYARD_RUNTIME="tensorflow", TF_CONFIG=json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}))
    proc = subprocess.run([*launcher_cmd(), str(script), arg], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert f"[trainyard-launch] started: {script} {arg}" in proc.stderr
    assert "torch.distributed.run" not in proc.stderr and "waiting for" not in proc.stderr


def test_tensorflow_runtime_waits_for_every_peer_then_starts_anyway(tmp_path):
    script = tmp_path / "hello.py"
    script.write_text(textwrap.dedent("""
        import os
        print("worker ran", os.environ["TF_CONFIG"] != "", flush=True)
    """))
    env = base_env(TRAINYARD_RUNTIME="tensorflow", TRAINYARD_JOIN_TIMEOUT_SECONDS="2", TF_CONFIG=json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "no-such-host.invalid:2222"]}, "task": {"type": "worker", "index": 0}}))
    proc = subprocess.run([*launcher_cmd(), str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[trainyard-launch]")]
    assert lines[:2] == [
        "[trainyard-launch] waiting for TF_CONFIG host no-such-host.invalid to resolve (up to 2 s)",
        "[trainyard-launch] TF_CONFIG host no-such-host.invalid still does not resolve after 2 s; starting the worker anyway",
    ]
    assert "worker ran True" in proc.stdout


def test_tensorflow_runtime_forwards_sigterm(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([*launcher_cmd(), str(script)], env=base_env(TRAINYARD_RUNTIME="tensorflow"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
