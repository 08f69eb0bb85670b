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
