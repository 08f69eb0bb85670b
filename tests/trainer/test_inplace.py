"""trainyard_trainer.inplace's coordinator, over real loopback sockets (no torch): who restarts,
when, and on whose account."""

from __future__ import annotations

import socket
import time

import pytest
from trainyard_trainer import contract
from trainyard_trainer.inplace import Coordinator, wanted

from .helpers import free_port


def client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def say(s: socket.socket, line: str) -> None:
    s.sendall(line.encode() + b"\n")


def hear(s: socket.socket) -> list[str]:
    buf = b""
    while not buf.endswith(b"\n"):
        buf += s.recv(4096)
    return buf.decode().split("\n")[0].split()


@pytest.fixture
def coordinator():
    port = free_port()
    c = Coordinator(port, world=2, max_restarts=2)
    a, b = client(port), client(port)
    deadline = time.monotonic() + 10
    while len(c.conns) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    yield c, a, b
    for s in (a, b):
        s.close()
    c.close()


def test_a_failure_restarts_every_rank_and_a_stale_report_is_ignored(coordinator):
    c, a, b = coordinator
    say(b, "fail 0 1 137")
    assert hear(a) == ["restart", "1", "1", "137", "1"] and hear(b) == ["restart", "1", "1", "137", "1"]
    say(a, "fail 0 0 87")  # the survivor's report about the generation that is already replaced
    say(a, "fail 1 0 1")
    assert hear(b) == ["restart", "2", "0", "1", "2"]


def test_a_survivors_peer_lost_waits_for_the_real_cause(coordinator):
    c, a, b = coordinator
    say(a, f"fail 0 0 {contract.PEER_LOST_EXIT_CODE}")
    say(b, "fail 0 1 139")
    assert hear(a) == ["restart", "1", "1", "139", "1"]


def test_a_peer_lost_alone_still_restarts_after_the_grace(coordinator):
    c, a, b = coordinator
    say(a, f"fail 0 0 {contract.PEER_LOST_EXIT_CODE}")
    assert hear(b) == ["restart", "1", "0", str(contract.PEER_LOST_EXIT_CODE), "1"]


def test_past_the_budget_everyone_gives_up_and_the_cause_is_named(coordinator):
    c, a, b = coordinator
    for gen in (0, 1):
        say(b, f"fail {gen} 1 1")
        assert hear(a)[0] == "restart"
        hear(b)
    say(b, "fail 2 1 3")
    assert hear(a) == ["giveup", "2", "1", "3"] and hear(b) == ["giveup", "2", "1", "3"]


def test_every_rank_done_is_finished(coordinator):
    c, a, b = coordinator
    say(a, "done 0 0")
    say(b, "done 0 1")
    assert hear(a)[0] == "finished" and hear(b)[0] == "finished"


@pytest.mark.parametrize(("env", "why"), [
    ({}, "restartMode is not Warm"),
    ({"TRAINYARD_RESTART_MODE": "Warm", "PET_MAX_RESTARTS": "0"}, "inPlaceRestarts is 0"),
    ({"TRAINYARD_RESTART_MODE": "Warm", "PET_MAX_RESTARTS": "2", "RANK": "a sentence"}, "no fixed rank"),
    ({"TRAINYARD_RESTART_MODE": "Warm", "PET_MAX_RESTARTS": "2", "RANK": "0", "WORLD_SIZE": "2",
      "MASTER_ADDR": "h", "MASTER_PORT": "29400"}, None),
])
def test_who_restarts_in_place_warm(env, why):
    got = wanted(env)
    assert got == why if why is None else why in got
