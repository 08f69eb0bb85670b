"""Four fixes to kopf 1.45.2 (the pinned version), applied before the operator starts.

1. Start-up is O(N^2) in the indexed objects. Until every indexed object has been indexed once, kopf holds one toggle per object in a ToggleSet
(`operator_indexed`), and every object's worker waits on that set's condition before its handlers
run. kopf's `make_toggle` and `drop_toggle` call `notify_all` on every change, so each of N objects
wakes all N waiters twice: O(N^2) wake-ups on the event loop while the operator starts. Measured
with P2 (bench/): an operator restart with 1,000 jobs x 8 pods Running took 664 s to track every
job again, and py-spy put 63 % of the loop in `Condition.notify_all` from these two methods; at
1,600 pods it was 26 s.

A waiter's predicate is the set's `is_on()` alone (ToggleSet.wait_for), and adding or removing a
toggle changes no toggle's own state, so waking the waiters only when `is_on()` changes loses no
wake-up.

2. Every event deep-copies its object. For each watch event kopf builds the object's "essence" (a
deep copy of the body minus the status and kopf's own annotations) and diffs it with the last one,
even for a resource that has only `on.event` handlers and indexers, whose causes never read it:
only daemons and timers (spawning) and on.create/update/delete/resume (changing) use the diff.
py-spy on the operator during P2's burst (500 jobs x 8 pods) put 39 % of the event loop's busy
samples in that deep copy. `_detect_causes` below skips it when the resource has neither kind of
handler (the operator registers none), and is kopf's own otherwise.

3. Every listed object's whole body is held until every object is indexed. At start-up each
object's worker waits for all indexes (1.) with its raw event in hand, so a restart holds the full
list at once: with 40,000 worker pods Running the restarted operator's RSS was 2.4 GB (P2's
stretch), for pods of which it reads labels, owner, status and the node name. The watch stream is
wrapped so that each object is made lean (`apply(lean=...)`: the operator drops managedFields and,
of pods and nodes, what it never reads) before kopf sees it. Everything kopf itself reads of an
object (its metadata) is kept.

4. JSON decoding is the biggest single cost left on the event loop. py-spy on a restart with 16,000
pods put 27 % of the operator's samples in the stdlib's `json` decoding the lists, and the watch
streams of a burst decode one object per event. kopf's `api.get` and `api.stream` decode with
orjson instead (2.0x faster per watch event, measured on this project's pods); a document orjson
refuses is decoded by the stdlib as before.

Other kopf versions are left alone: the patches name the version they were written against.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from typing import Any

import orjson
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import api, watching
from kopf._core.intents import causes
from kopf._core.reactor import processing

PATCHED_KOPF = "1.45.2"
log = logging.getLogger("trainyard.controller")


async def _make_toggle(self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None) -> Any:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Any) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


_kopf_detect_causes = processing._detect_causes


def _detect_causes(*, indexers: Any, registry: Any, settings: Any, resource: Any, raw_event: Any, body: Any,
                   patch: Any, memory: Any, local_logger: Any, event_logger: Any) -> Any:
    if registry._spawning.has_handlers(resource=resource) or registry._changing.has_handlers(resource=resource):
        return _kopf_detect_causes(indexers=indexers, registry=registry, settings=settings, resource=resource,
                                   raw_event=raw_event, body=body, patch=patch, memory=memory,
                                   local_logger=local_logger, event_logger=event_logger)
    watching = causes.detect_watching_cause(
        raw_event=raw_event, resource=resource, indices=indexers.indices, logger=local_logger, patch=patch,
        body=body, memo=memory.memo,
    ) if registry._watching.has_handlers(resource=resource) else None
    return processing._Causes(watching, None, None)


_kopf_infinite_watch = watching.infinite_watch
# (group, plural, the object) -> None: makes the object lean in place; None keeps it whole
_lean: list[Callable[[str, str, dict[str, Any]], None] | None] = [None]


async def _infinite_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
    async for raw_event in _kopf_infinite_watch(resource=resource, **kwargs):
        lean = _lean[0]
        obj = raw_event.get("object") if lean is not None and isinstance(raw_event, dict) else None
        if isinstance(obj, dict) and raw_event.get("type") != "ERROR":
            lean(resource.group, resource.plural, obj)
        yield raw_event


def _loads(doc: str | bytes) -> Any:
    try:
        return orjson.loads(doc)
    except orjson.JSONDecodeError:  # e.g. NaN, which the stdlib takes
        return json.loads(doc)


async def _get(url: str, *, settings: Any, payload: object | None = None, headers: dict[str, str] | None = None,
               timeout: Any = None, logger: Any) -> Any:
    """kopf's api.get, decoding with orjson."""
    response = await api.request(method="get", url=url, payload=payload, headers=headers, timeout=timeout,
                                 settings=settings, logger=logger)
    async with response:
        return await response.json(loads=_loads)


def apply(lean: Callable[[str, str, dict[str, Any]], None] | None = None) -> bool:
    """Patches kopf's ToggleSet, cause detection and watch stream if kopf is the version this was
    written for; True if patched. `lean` (kept until given again): what the watch keeps of each object."""
    installed = version("kopf")
    if installed != PATCHED_KOPF:
        log.warning("kopf %s is not %s: none of its fixes is applied (start-up may be slow, memory high, with "
                    "many pods; see trainyard.kube.kopf_patches)", installed, PATCHED_KOPF)
        return False
    aiotoggles.ToggleSet.make_toggle = _make_toggle  # type: ignore[method-assign]
    aiotoggles.ToggleSet.drop_toggle = _drop_toggle  # type: ignore[method-assign]
    aiotoggles.ToggleSet.drop_toggles = _drop_toggles  # type: ignore[method-assign]
    processing._detect_causes = _detect_causes  # type: ignore[assignment]
    watching.infinite_watch = _infinite_watch  # type: ignore[assignment]
    api.get = _get  # type: ignore[assignment]
    api.json = types.SimpleNamespace(loads=_loads, dumps=json.dumps)  # type: ignore[assignment] # api.stream's
    if lean is not None:
        _lean[0] = lean
    return True
