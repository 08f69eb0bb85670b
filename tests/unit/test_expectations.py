"""The Kubernetes driver's expectations: what the watch has not shown yet, with an injected clock."""

from __future__ import annotations

from trainyard.engine import Launch
from trainyard.engine.workers import State
from trainyard.kube.expectations import CREATION_TTL, Expectations

from .conftest import wk


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_creation_the_watch_has_not_shown_counts_as_a_pending_worker():
    clock = Clock()
    ex = Expectations(clock)
    ex.expect_created([Launch("demo-0-0", 0, 0, 0), Launch("demo-0-1", 1, 0, 0)])
    seen = [wk(0)]
    workers = ex.workers(seen)
    assert [(w.name, w.state) for w in workers] == [("demo-0-0", State.RUNNING), ("demo-0-1", State.PENDING)]
    assert ex.workers([wk(0), wk(1)]) == [wk(0), wk(1)]  # once seen, the watch is the truth
    assert ex.created == {}


def test_a_creation_expectation_expires():
    clock = Clock()
    ex = Expectations(clock)
    ex.expect_created([Launch("demo-0-1", 1, 0, 0)])
    clock.t += CREATION_TTL + 1
    assert ex.workers([]) == []


def test_a_failed_creation_is_not_expected():
    ex = Expectations(Clock())
    ex.expect_created([Launch("demo-0-1", 1, 0, 0)])
    ex.creation_failed("demo-0-1")
    assert ex.workers([]) == []


def test_a_pod_we_deleted_is_gone_for_decisions_and_its_deletion_is_sent_once():
    ex = Expectations(Clock())
    assert ex.expect_deleted(["demo-0-0", "demo-0-1"]) == ["demo-0-0", "demo-0-1"]
    assert ex.expect_deleted(["demo-0-1", "demo-1-0"]) == ["demo-1-0"]
    failed = wk(1, state=State.FAILED, exit_code=1)
    assert ex.workers([wk(0), failed]) == [failed]  # a finished pod still tells its story


def test_a_pod_deleted_by_someone_else_stays_as_a_vanished_worker():
    ex = Expectations(Clock())
    ex.vanished(wk(1))
    [w] = ex.workers([])
    assert (w.state, w.disruption) == (State.VANISHED, "PodDeleted")
    ex.expect_deleted(["demo-0-0"])
    ex.vanished(wk(0))  # our own deletion
    assert [x.name for x in ex.workers([])] == ["demo-0-1"]
    ex.forget_before(1)
    assert ex.workers([]) == []
