"""The job cache: a reconcile woken by an event reads the job from the watch or from our own last
write, never an older version; whatever it cannot vouch for is read with a GET."""

from __future__ import annotations

import pytest

from trainyard.kube.jobcache import JobCache
from trainyard.kube.loop import JobLoop

from .conftest import BASE, merge
from .fakes import FakeClient


def v(rv: int, **extra) -> dict:
    return merge(BASE, {"metadata": {"resourceVersion": str(rv)}, **extra})


def rv(body: dict | None) -> str | None:
    return None if body is None else body["metadata"]["resourceVersion"]


def test_the_watch_alone_is_trusted():
    c = JobCache()
    assert c.read() is None
    c.from_watch(v(3))
    c.from_watch(v(4))
    assert rv(c.read()) == "4"


def test_after_our_write_older_watch_events_never_win():
    c = JobCache()
    c.from_watch(v(3))
    c.known(v(5))  # our status write's answer
    assert rv(c.read()) == "5"
    c.from_watch(v(4))  # someone's write before ours, arriving late: we cannot tell it from newer
    assert c.read() is None
    c.from_watch(v(5))  # ours: nothing older is in flight any more
    assert rv(c.read()) == "5"
    c.from_watch(v(6))
    assert rv(c.read()) == "6"


def test_a_watch_that_skips_our_version_costs_gets_not_staleness():
    c = JobCache()
    c.from_watch(v(3))
    c.known(v(5))
    c.from_watch(v(7))  # a relist: 5 is never shown
    assert c.read() is None
    c.known(v(7))  # the GET: the watch has shown 7 already, nothing to wait for
    assert rv(c.read()) == "7"
    c.from_watch(v(8))
    assert rv(c.read()) == "8"


def test_an_answer_the_watch_has_shown_already_never_hides_a_newer_version():
    """Our status write (5) is answered, but its thread records the answer only after posting the
    decision's events; meanwhile the watch shows 5 and a user's patch (6). The cache keeps 6."""
    c = JobCache()
    c.from_watch(v(3))
    c.from_watch(v(5))
    c.from_watch(v(6, spec={"runPolicy": {"suspend": True}}))
    c.known(v(5))
    assert rv(c.read()) == "6" and c.read()["spec"]["runPolicy"]["suspend"] is True
    c.from_watch(v(7))  # nothing is awaited: the watch goes on being trusted
    assert rv(c.read()) == "7"
    c.known(v(7))  # a GET the watch has shown already
    assert rv(c.read()) == "7"


def test_what_is_read_is_a_copy():
    c = JobCache()
    c.from_watch(v(3))
    c.read()["spec"]["workers"] = 99
    assert c.read()["spec"]["workers"] == 2


@pytest.mark.usefixtures("first_write_at_once")
def test_a_reconcile_woken_by_an_event_needs_no_get_and_a_resync_always_reads():
    client = FakeClient(dict(BASE))
    loop = JobLoop("ml", "demo", client, lambda: [])
    loop.cache.from_watch(client.get_job("ml", "demo"))  # the ADDED event's body
    client.calls.clear()
    loop.reconcile(fresh=False)
    assert client.verbs().count("get") == 0 and client.verbs().count("patch_status") == 1
    loop.reconcile(fresh=False)  # the status we wrote is what it decides on: nothing new to write
    assert client.verbs().count("get") == 0 and client.verbs().count("patch_status") == 1
    loop.reconcile(fresh=True)
    assert client.verbs().count("get") == 1


@pytest.mark.usefixtures("first_write_at_once")
def test_a_conflict_forgets_the_cache():
    client = FakeClient(dict(BASE))
    loop = JobLoop("ml", "demo", client, lambda: [])
    loop.cache.from_watch(client.get_job("ml", "demo"))
    client.calls.clear()
    client.conflicts = 1
    loop.reconcile(fresh=False)
    assert client.verbs().count("get") == 1 and client.job["status"]["phase"] == "Pending"
