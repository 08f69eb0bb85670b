"""trainyard.kube.kopf_patches: kopf's ToggleSet wakes its waiters only when the set's state
changes, and waiters still wake exactly when they should (a real ToggleSet and real asyncio)."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from trainyard.kube import kopf_patches


def _counting(ts: aiotoggles.ToggleSet) -> list[int]:
    calls = [0]
    notify_all = ts._condition.notify_all

    def counted() -> None:
        calls[0] += 1
        notify_all()

    ts._condition.notify_all = counted  # type: ignore[method-assign]
    return calls


def test_the_pinned_kopf_is_patched():
    assert kopf_patches.apply() is True
    assert aiotoggles.ToggleSet.drop_toggle is kopf_patches._drop_toggle
    from kopf._core.reactor import processing
    assert processing._detect_causes is kopf_patches._detect_causes


def test_waiters_wake_once_when_the_last_object_is_indexed_not_once_per_object():
    """As at start-up: one toggle per object, every object's worker waiting for the set to be on."""
    kopf_patches.apply()

    async def scenario() -> tuple[int, int, bool]:
        ts = aiotoggles.ToggleSet(all)
        calls = _counting(ts)
        n = 300
        toggles = [await ts.make_toggle(name=str(i)) for i in range(n)]
        waiters = [asyncio.create_task(ts.wait_for(True)) for _ in range(n)]
        await asyncio.sleep(0)
        for t in toggles[:-1]:
            await ts.drop_toggle(t)
        await asyncio.sleep(0.01)
        early = any(w.done() for w in waiters)  # nobody may go on while one object is not indexed
        await ts.drop_toggle(toggles[-1])
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        return calls[0], n, early

    notifies, n, early = asyncio.run(scenario())
    assert not early
    assert notifies == 2  # the first toggle turned the empty (on) set off; the last drop turned it on
    assert notifies < n  # unpatched: 2 per object


def test_a_toggle_that_turns_the_set_off_still_wakes_who_waits_for_off():
    kopf_patches.apply()

    async def scenario() -> bool:
        ts = aiotoggles.ToggleSet(all)
        on = await ts.make_toggle(True)
        waiter = asyncio.create_task(ts.wait_for(False))
        await asyncio.sleep(0)
        off = await ts.make_toggle(False)
        await asyncio.wait_for(waiter, 5)
        await ts.drop_toggles([off, on])
        return ts.is_on()

    assert asyncio.run(scenario()) is True


def _in_a_loop(fn):
    async def call():
        return fn()
    return asyncio.run(call())


def _cause_inputs(registry):
    import logging

    import kopf
    from kopf._cogs.structs import bodies, patches, references
    from kopf._core.engines import indexing
    from kopf._core.reactor import inventory

    resource = references.Resource(group="", version="v1", plural="pods", kind="Pod", singular="pod",
                                   namespaced=True, verbs=["list", "watch"])
    raw = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"a": "b"}},
           "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "X", "value": "1"}]}]},
           "status": {"phase": "Running"}}
    logger = logging.LoggerAdapter(logging.getLogger("test"), {})
    return dict(indexers=indexing.OperatorIndexers(), registry=registry, settings=kopf.OperatorSettings(),
                resource=resource, raw_event={"type": "MODIFIED", "object": raw}, body=bodies.Body(raw),
                patch=patches.Patch(), memory=inventory.ResourceMemory(), local_logger=logger, event_logger=logger)


def test_events_of_a_resource_with_only_event_handlers_are_never_deep_copied(monkeypatch):
    import kopf
    from kopf._cogs.configs import diffbase

    kopf_patches.apply()
    registry = kopf.OperatorRegistry()
    kopf.on.event("pods", registry=registry)(lambda **_: None)
    built = []
    real_build = diffbase.DiffBaseStorage.build
    monkeypatch.setattr(diffbase.DiffBaseStorage, "build", lambda self, **kw: built.append(1) or real_build(self, **kw))
    inputs = _in_a_loop(lambda: _cause_inputs(registry))  # kopf's memory reads the loop's clock
    ours = kopf_patches._detect_causes(**inputs)
    assert built == []
    theirs = kopf_patches._kopf_detect_causes(**inputs)  # kopf's own: the same cause, at the cost of a copy
    assert built == [1]
    assert (ours.spawning_cause, ours.changing_cause) == (theirs.spawning_cause, theirs.changing_cause) == (None, None)
    assert ours.watching_cause.type == theirs.watching_cause.type == "MODIFIED"
    assert ours.watching_cause.body is theirs.watching_cause.body is inputs["body"]
    assert ours.watching_cause.event is inputs["raw_event"]


def test_a_resource_with_change_handlers_keeps_kopfs_own_detection():
    import kopf

    kopf_patches.apply()
    registry = kopf.OperatorRegistry()
    kopf.on.update("pods", registry=registry)(lambda **_: None)
    causes = kopf_patches._detect_causes(**_in_a_loop(lambda: _cause_inputs(registry)))
    assert causes.changing_cause is not None  # kopf's diff ran: only it makes a changing cause


def test_the_watch_hands_kopf_lean_objects_before_kopf_holds_them(monkeypatch):
    """kopf_patches 3.: what kopf's queueing reads from `watching.infinite_watch` is already lean."""
    from kopf._cogs.clients import watching
    from kopf._cogs.structs import references

    from trainyard.kube import controller  # noqa: F401 - it gives kopf_patches the operator's projection

    pod = {"metadata": {"name": "p", "uid": "u", "labels": {"trainyard.dev/job-name": "j"},
                        "managedFields": [{"manager": "trainyard", "fieldsV1": {"f:spec": {}}}]},
           "spec": {"nodeName": "n", "containers": [{"name": "trainer", "env": [{"name": "X", "value": "1"}]}]},
           "status": {"phase": "Running"}}
    job = {"metadata": {"name": "j", "managedFields": [{"manager": "kubectl"}]}, "spec": {"workers": 2}}
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "metadata": {"managedFields": "kept"}}}
    streams = {"pods": [{"type": None, "object": pod}, watching.Bookmark.LISTED, error],
               "distributedtrainingjobs": [{"type": "MODIFIED", "object": job}]}

    async def fake_watch(*, resource, **_):
        for ev in streams[resource.plural]:
            yield ev

    monkeypatch.setattr(kopf_patches, "_kopf_infinite_watch", fake_watch)
    assert kopf_patches.apply()

    async def read(resource):
        return [ev async for ev in watching.infinite_watch(resource=resource, settings=None, namespace=None)]

    pods = asyncio.run(read(references.Resource(group="", version="v1", plural="pods")))
    assert pods[0]["object"] == {"metadata": {"name": "p", "uid": "u", "labels": {"trainyard.dev/job-name": "j"}},
                                 "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    assert pods[1] is watching.Bookmark.LISTED and pods[2] is error and error["object"]["metadata"] == {"managedFields": "kept"}
    jobs = asyncio.run(read(references.Resource(group="trainyard.dev", version="v1alpha1", plural="distributedtrainingjobs")))
    assert jobs[0]["object"] == {"metadata": {"name": "j"}, "spec": {"workers": 2}}  # a job keeps its spec


def test_kopf_decodes_with_orjson_and_falls_back_to_the_stdlib():
    import json

    from kopf._cogs.clients import api

    assert kopf_patches.apply()
    assert api.get is kopf_patches._get and api.json.loads is kopf_patches._loads
    line = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "p", "labels": {"é": "ü"}},
                                                   "status": {"phase": "Running", "x": 1.5, "n": None}}})
    assert api.json.loads(line) == api.json.loads(line.encode()) == json.loads(line)
    odd = '{"spec": {"n": NaN}}'  # orjson refuses what the stdlib takes
    assert api.json.loads(odd)["spec"]["n"] != api.json.loads(odd)["spec"]["n"]  # NaN


def test_the_operator_freezes_what_its_imports_made_and_collects_young_objects_less_often():
    import gc

    from trainyard.cli.serve import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
