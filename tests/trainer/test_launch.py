"""The launcher's pure parts: env parsing, argv, exit codes, the DNS wait (with a fake resolver)."""

from __future__ import annotations

import socket

import pytest
from trainyard_trainer import HUNG_EXIT_CODE
from trainyard_trainer.launch import (
    DEFAULT_JOIN_TIMEOUT,
    LaunchConfig,
    RootCauseScanner,
    build_argv,
    exit_code_from_status,
    final_exit_code,
    hung_message,
    is_loopback,
    parse_endpoint,
    parse_rdzv_conf,
    wait_for_dns,
)

POD_ENV = {
    "PET_NNODES": "4:4",
    "PET_NPROC_PER_NODE": "1",
    "PET_RDZV_BACKEND": "c10d",
    "PET_RDZV_ENDPOINT": "digits-ddp-0-0.digits-ddp.ml.svc:29400",
    "PET_RDZV_ID": "uid-0",
    "PET_RDZV_CONF": "join_timeout=300,is_host=false",
    "PET_MAX_RESTARTS": "0",
}


def test_hung_exit_code_is_the_operators():
    assert HUNG_EXIT_CODE == 86
    assert hung_message(120) == "Hung: no training progress for 120 s"
    assert hung_message(2.5) == "Hung: no training progress for 2.5 s"


@pytest.mark.parametrize(
    ("conf", "want"),
    [
        ("join_timeout=600,is_host=true", {"join_timeout": "600", "is_host": "true"}),
        ("join_timeout=600,last_call_timeout=5,is_host=false", {"join_timeout": "600", "last_call_timeout": "5", "is_host": "false"}),
        ("", {}),
        (None, {}),
        (" join_timeout = 10 ,", {"join_timeout": "10"}),
    ],
)
def test_parse_rdzv_conf(conf, want):
    assert parse_rdzv_conf(conf) == want


def test_parse_rdzv_conf_rejects_garbage():
    with pytest.raises(ValueError, match="key=value"):
        parse_rdzv_conf("join_timeout")


@pytest.mark.parametrize(
    ("endpoint", "want"),
    [
        ("digits-0-0.digits.ml.svc:29400", ("digits-0-0.digits.ml.svc", 29400)),
        # the operator's absolute name (trailing dot): the dot stays with the host
        ("digits-0-0.digits.ml.svc.cluster.local.:29400", ("digits-0-0.digits.ml.svc.cluster.local.", 29400)),
        ("127.0.0.1:1234", ("127.0.0.1", 1234)),
        ("[::1]:29400", ("::1", 29400)),
        ("somehost", ("somehost", None)),
        ("::1", ("::1", None)),
        ("", None),
        (None, None),
    ],
)
def test_parse_endpoint(endpoint, want):
    assert parse_endpoint(endpoint) == want


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.3.2.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("digits-0-0.digits.ml.svc")


def test_config_from_pod_env():
    cfg = LaunchConfig.from_env(["/opt/trainyard/examples/train_digits.py", "--epochs", "3"], POD_ENV)
    assert cfg.script == "/opt/trainyard/examples/train_digits.py"
    assert cfg.args == ("--epochs", "3")
    assert (cfg.endpoint_host, cfg.endpoint_port) == ("digits-ddp-0-0.digits-ddp.ml.svc", 29400)
    assert cfg.join_timeout == 300
    assert not cfg.watchdog
    assert not cfg.is_host and cfg.pod_ip is None
    host = LaunchConfig.from_env(["t.py"], {**POD_ENV, "PET_RDZV_CONF": "join_timeout=300,is_host=TRUE",
                                            "TRAINYARD_POD_IP": "10.244.0.7"})
    assert host.is_host and host.pod_ip == "10.244.0.7"


def test_config_defaults_without_rendezvous_env():
    """Nothing is required beyond what torchrun requires: no PET_* at all is fine (torchrun's defaults)."""
    cfg = LaunchConfig.from_env(["train.py"], {})
    assert cfg.endpoint_host is None and cfg.join_timeout == DEFAULT_JOIN_TIMEOUT == 600
    assert build_argv(cfg, "py") == ["py", "-m", "torch.distributed.run", "train.py"]


def test_config_watchdog():
    env = POD_ENV | {"TRAINYARD_HEARTBEAT_FILE": "/tmp/hb/beat", "TRAINYARD_PROGRESS_DEADLINE_SECONDS": "900"}
    cfg = LaunchConfig.from_env(["t.py"], env)
    assert cfg.watchdog and cfg.heartbeat_file == "/tmp/hb/beat" and cfg.progress_deadline == 900
    # Only one of the pair: no watchdog.
    assert not LaunchConfig.from_env(["t.py"], POD_ENV | {"TRAINYARD_HEARTBEAT_FILE": "/tmp/x"}).watchdog
    with pytest.raises(ValueError):
        LaunchConfig.from_env(["t.py"], env | {"TRAINYARD_PROGRESS_DEADLINE_SECONDS": "0"})


def test_config_needs_a_script():
    with pytest.raises(ValueError, match="usage"):
        LaunchConfig.from_env([], POD_ENV)


def test_argv_in_a_pod_adds_its_ip_as_the_local_address_and_passes_args_untouched():
    env = POD_ENV | {"TRAINYARD_POD_IP": "10.0.0.7"}
    cfg = LaunchConfig.from_env(["train.py", "--nnodes", "7", "--max-restarts=3", "x"], env)
    # rank 0's store is reached by IP: only worker 0's name is in DNS (the headless Service).
    # Flags after the script belong to the script, never to torchrun.
    assert build_argv(cfg, "/usr/bin/python3") == [
        "/usr/bin/python3", "-m", "torch.distributed.run", "--local-addr", "10.0.0.7",
        "train.py", "--nnodes", "7", "--max-restarts=3", "x",
    ]
    without = LaunchConfig.from_env(["train.py"], POD_ENV)  # an older operator: torchrun's default
    assert build_argv(without, "py") == ["py", "-m", "torch.distributed.run", "train.py"]


def test_argv_locally_pins_the_local_address():
    cfg = LaunchConfig.from_env(["train.py"], POD_ENV | {"PET_RDZV_ENDPOINT": "127.0.0.1:29400"})
    assert build_argv(cfg, "py") == ["py", "-m", "torch.distributed.run", "--local-addr", "127.0.0.1", "train.py"]


@pytest.mark.parametrize(("status", "code"), [(0, 0), (1, 1), (3, 3), (-15, 143), (-9, 137), (-11, 139)])
def test_exit_code_from_status(status, code):
    assert exit_code_from_status(status) == code


@pytest.mark.parametrize("line", [
    "torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: The connection to the C10d store has failed.",
    "torch.distributed.elastic.rendezvous.api.RendezvousClosedError",
    "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41047",
    "torch.distributed.DistNetworkError: Connection reset by peer",
    "tensorflow.python.framework.errors_impl.UnavailableError: ... UNAVAILABLE: Connection reset by peer",
])
def test_a_broken_gang_is_recognised(line):
    s = RootCauseScanner()
    s.feed(line)
    assert s.peer_lost
    assert final_exit_code(1, 1, peer_lost=True) == 87


def test_a_scripts_own_error_is_not_a_broken_gang():
    s = RootCauseScanner()
    for line in ["Traceback (most recent call last):", "ValueError: bad learning rate", "Connection refused"]:
        s.feed(line)
    assert not s.peer_lost
    assert final_exit_code(1, -9, peer_lost=True) == 137  # this worker was killed: that is the cause
    assert final_exit_code(1, forwarded=15, peer_lost=True) == 143  # Kubernetes stopped it


def test_final_exit_code():
    assert final_exit_code(0) == 0
    assert final_exit_code(1) == 1
    assert final_exit_code(1, 3) == 3  # torchrun says 1, the worker said 3
    assert final_exit_code(1, -11) == 139  # the worker segfaulted
    assert final_exit_code(1, -9) == 137
    assert final_exit_code(1, forwarded=15) == 143  # torchrun's exit after our SIGTERM
    assert final_exit_code(143, forwarded=15) == 143
    assert final_exit_code(0, forwarded=15) == 0  # finished cleanly anyway
    assert final_exit_code(2) == 2  # torchrun's own usage error is not rewritten


TORCHRUN_FAILURE = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-21_23:59:36
  exitcode  : 1 (pid: 2)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-21_23:59:36
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -11 (pid: 26672)  (SIGSEGV)
  error_file: <N/A>
  traceback : Signal 11 (SIGSEGV) received by PID 26672
============================================================
"""


def test_root_cause_scanner():
    sc = RootCauseScanner()
    for line in TORCHRUN_FAILURE.splitlines():
        sc.feed(line)
    assert sc.exitcode == -11  # the root cause's, not the first "exitcode" line
    sc2 = RootCauseScanner()
    sc2.feed("  exitcode  : 3 (pid: 1)")  # outside a root-cause block: ignored
    assert sc2.exitcode is None


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_wait_for_dns_waits_until_the_record_appears(capsys):
    clock = FakeClock()
    calls = []

    def resolve(host, port):
        calls.append((host, port))
        if len(calls) < 4:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert wait_for_dns("w-0-0.w.ns.svc", 29400, 600, resolve=resolve, sleep=clock.sleep, clock=clock)
    assert calls == [("w-0-0.w.ns.svc", 29400)] * 4
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "waiting for rendezvous host" in line] == [
        "[trainyard-launch] waiting for rendezvous host w-0-0.w.ns.svc to resolve (up to 600 s)"
    ]


def test_wait_for_dns_gives_up_at_the_join_timeout(capsys):
    clock = FakeClock()

    def resolve(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "nope")

    assert not wait_for_dns("nowhere", 1, 10, resolve=resolve, sleep=clock.sleep, clock=clock)
    assert 10 <= clock.t <= 11
    assert "still does not resolve after 10 s" in capsys.readouterr().err


def test_wait_for_dns_is_silent_when_resolvable(capsys):
    assert wait_for_dns("127.0.0.1", 1, 10)
    assert capsys.readouterr().err == ""


def test_wait_for_dns_takes_worker_0s_ip_from_the_lease_while_the_name_does_not_resolve(capsys):
    """The cluster DNS caches "no such name" for ~30 s; the operator publishes worker 0's pod IP in
    the job's Lease within a second or two of the pod getting one: the launcher uses it then."""
    clock = FakeClock()
    answers = iter([None, None, "10.244.0.7"])

    def resolve(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    got = wait_for_dns("w-2-0.w.ns.svc.cluster.local.", 29400, 600, resolve=resolve, sleep=clock.sleep, clock=clock,
                       fallback=lambda: next(answers))
    assert got == "10.244.0.7" and clock.t == 2
    assert "does not resolve yet after 2.0 s; using 10.244.0.7, worker 0's pod IP from the job's Lease" in \
        capsys.readouterr().err


def test_the_launcher_reads_the_deadlines_and_the_rendezvous_attempt_from_its_env():
    cfg = LaunchConfig.from_env(["t.py"], {"TRAINYARD_HEARTBEAT_FILE": "/hb", "TRAINYARD_PROGRESS_DEADLINE_SECONDS": "60",
                                           "TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS": "630", "PET_RDZV_ID": "a-b-c-7",
                                           "TRAINYARD_WORKER_INDEX": "1", "TRAINYARD_ATTEMPT": "9"})
    assert (cfg.deadline_for("starting"), cfg.deadline_for("training")) == (630, 60)
    assert (cfg.rendezvous_attempt, cfg.worker_index, cfg.attempt) == (7, 1, 9)
    no_first = LaunchConfig.from_env(["t.py"], {"TRAINYARD_HEARTBEAT_FILE": "/hb",
                                                "TRAINYARD_PROGRESS_DEADLINE_SECONDS": "60"})
    assert no_first.deadline_for("starting") == 60  # an older operator's env: the deadline from torchrun's start
