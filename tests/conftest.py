"""Session-wide order and set-up: the tiers without a cluster run first, while the e2e tiers'
one-time set-ups build in the background (tests/prebuild.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import prebuild

TESTS = Path(__file__).resolve().parent
# Unit first (fastest feedback), then the torch tiers; the e2e tiers last, in the order their
# background set-ups finish.
TIER_ORDER = ("unit", "trainer", "runtime", "chart", "cluster", "kueue", "node")


def _tier(item: pytest.Item) -> str | None:
    path = Path(str(item.fspath)).resolve()
    if not path.is_relative_to(TESTS):
        return None  # a test file outside tests/: no tier, no set-up
    with_tier = path.relative_to(TESTS).parts
    return with_tier[0] if len(with_tier) > 1 else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {tier: i for i, tier in enumerate(TIER_ORDER)}
    items.sort(key=lambda item: rank.get(_tier(item) or "", len(rank)))  # stable: files keep their order


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly:
        prebuild.start({t for item in session.items if (t := _tier(item)) is not None})


def pytest_sessionfinish(session: pytest.Session) -> None:
    prebuild.stop()
