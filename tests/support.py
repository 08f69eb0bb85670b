"""Helpers every test tier (and the benchmarks) share: waiting on a condition, never sleeping on
hope, a free loopback port, and the smallest real gloo gang script."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import pytest

T = TypeVar("T")

# One real gloo all_reduce of rank + 1 over the gang (2 ranks: 3.0), as a worker's script: every
# rank prints "rank R/W on HOST: all_reduce=X".
ALL_REDUCE = """
import socket, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print(f"rank {dist.get_rank()}/{dist.get_world_size()} on {socket.gethostname()}: all_reduce={t.item()}", flush=True)
dist.destroy_process_group()
"""


def wait_for(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Polls fn until it returns something truthy; fails with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tier_unavailable(tier: str, why: str) -> NoReturn:
    """A tier whose tools or cluster are missing: a failure under CI=true (nothing is silently
    skipped there), elsewhere a skip announced by a loud line on stderr."""
    if IN_CI:
        pytest.fail(f"{tier} tier cannot run in CI: {why}", pytrace=False)
    line = f"SKIPPING THE {tier.upper()} TIER: {why}"
    print(f"\n{'!' * len(line)}\n{line}\n{'!' * len(line)}", file=sys.stderr)
    pytest.skip(line, allow_module_level=True)
