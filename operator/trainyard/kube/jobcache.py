"""The newest version of one job that the operator knows, so that a reconcile woken by an event
reads the job without a GET.

It is fed by the watch (kopf's job events, which arrive in resourceVersion order) and by the
apiserver's answers to our own reads and status writes. A version is used only while nothing newer
can be in flight:

- after a write of ours answered with resourceVersion R, the watch's events before R's are older
  than what we hold: until R arrives, any other version from the watch makes the cache unknown, and
  the next reconcile reads the job with a GET;
- a GET's answer is held the same way (awaited, unless the watch has shown that version already).

So a watch that relists and skips R costs GETs, never a decision on a stale job. A reconcile that a
requeue or the resync started (no event) always reads with a GET: the resync stays a safety net
for a watch that has gone quiet.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any


def _rv(body: Mapping[str, Any]) -> str | None:
    return (body.get("metadata") or {}).get("resourceVersion")


class JobCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body: dict[str, Any] | None = None
        self._awaiting: str | None = None  # the resourceVersion of ours that the watch has not shown yet
        self._seen: str | None = None  # the newest resourceVersion the watch has shown

    def from_watch(self, body: Mapping[str, Any]) -> None:
        """A job event (ADDED or MODIFIED) as the watch delivered it."""
        rv = _rv(body)
        with self._lock:
            self._seen = rv
            if self._awaiting is None or rv == self._awaiting:
                self._body = copy.deepcopy(dict(body))
                self._awaiting = None
            else:  # older than what we wrote or read (or the watch skipped it): unknown until it arrives
                self._body = None

    def known(self, body: Mapping[str, Any]) -> None:
        """The apiserver's answer to a GET or a status write of ours: the newest version there is."""
        rv = _rv(body)
        with self._lock:
            self._body = copy.deepcopy(dict(body))
            self._awaiting = None if rv == self._seen else rv

    def forget(self) -> None:
        """The job changed in a way we did not see (a conflict): read it again."""
        with self._lock:
            self._body = None

    def read(self) -> dict[str, Any] | None:
        """The newest version, or None when only a GET can tell."""
        with self._lock:
            return copy.deepcopy(self._body) if self._body is not None else None
