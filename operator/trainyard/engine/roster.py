"""The current gang's members as the status records them: for each worker index, the attempt of
the pod the operator created for it. Written in compact ranges, as a Job's completedIndexes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..api import DistributedTrainingJobStatus
from ..api.status import Members


def compact(indexes: Iterable[int]) -> str:
    """[0, 1, 2, 3, 5] -> "0-3,5"."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(set(indexes)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def expand(text: str) -> list[int]:
    """"0-3,5" -> [0, 1, 2, 3, 5]."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


@dataclass(frozen=True)
class Member:
    attempt: int
    created: bool = True  # False: the pod is yet to be created (its creation was refused)


def read_roster(status: DistributedTrainingJobStatus) -> dict[int, Member] | None:
    """index -> member, or None when the status predates the roster (an older operator wrote it)."""
    if status.members is None:
        return None
    return {i: Member(m.attempt, m.created) for m in status.members for i in expand(m.indexes)}


def write_roster(roster: Mapping[int, Member]) -> list[Members]:
    groups: dict[tuple[int, bool], list[int]] = {}
    for index, member in roster.items():
        groups.setdefault((member.attempt, member.created), []).append(index)
    return [Members(attempt=a, indexes=compact(ix), created=c) for (a, c), ix in sorted(groups.items())]
