"""The newest version of one job that the operator knows, so that a reconcile woken by an event
reads the job without a GET.

It is fed by the watch (kopf's job events, which arrive in resourceVersion order) and by the
apiserver's answers to our own reads and status writes. A version is used only while nothing newer
can be in flight:

- after a write of ours answered with resourceVersion R, the watch's events before R's are older
  than what we hold: until R arrives, any other version from the watch makes the cache unknown, and
  the next reconcile reads the job with a GET;
- a GET's answer is held the same way (awaited, unless the watch has shown that version already);
- the watch may show R, and versions after it, before the thread that wrote R records the answer
  (the write is followed by the decision's events and the progress Lease, and the threads share the
  GIL with the watch): an answer whose version the watch has shown already is older than or equal
  to the newest the watch holds, so the cache keeps the watch's. Recording it instead would leave a
  user's patch that arrived meanwhile unseen until the resync (a suspend not acted on for minutes:
  seen once in CI).

So a watch that relists and skips R costs GETs, never a decision on a stale job. A reconcile that a
requeue or the resync started (no event) always reads with a GET: the resync stays a safety net
for a watch that has gone quiet.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

# How many of the watch's latest versions are remembered to tell an answer the watch has shown
# already from one it has not: far more than can arrive while one reconcile's writes are answered.
SEEN_VERSIONS = 64


def _rv(body: Mapping[str, Any]) -> str | None:
    return (body.get("metadata") or {}).get("resourceVersion")


class JobCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body: dict[str, Any] | None = None
        self._awaiting: str | None = None  # the resourceVersion of ours that the watch has not shown yet
        self._watched: dict[str, Any] | None = None  # the newest body the watch has shown
        self._recent: deque[str | None] = deque(maxlen=SEEN_VERSIONS)  # the watch's latest versions

    def from_watch(self, body: Mapping[str, Any]) -> None:
        """A job event (ADDED or MODIFIED) as the watch delivered it."""
        rv = _rv(body)
        with self._lock:
            self._watched = copy.deepcopy(dict(body))
            self._recent.append(rv)
            if self._awaiting is None or rv == self._awaiting:
                self._body, self._awaiting = self._watched, None  # never mutated: read() copies
            else:  # older than what we wrote or read (or the watch skipped it): unknown until it arrives
                self._body = None

    def known(self, body: Mapping[str, Any]) -> None:
        """The apiserver's answer to a GET or a status write of ours: the newest version there is."""
        rv = _rv(body)
        with self._lock:
            if rv is not None and rv in self._recent:  # the watch has shown it, and maybe newer ones
                self._body, self._awaiting = self._watched, None  # never mutated: read() copies
            else:
                self._body, self._awaiting = copy.deepcopy(dict(body)), rv

    def forget(self) -> None:
        """The job changed in a way we did not see (a conflict): read it again."""
        with self._lock:
            self._body = None

    def read(self) -> dict[str, Any] | None:
        """The newest version, or None when only a GET can tell."""
        with self._lock:
            return copy.deepcopy(self._body) if self._body is not None else None
