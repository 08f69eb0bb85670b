"""Reading the sample-id logs of ``train_digits.py --log-samples DIR`` and checking exactly-once consumption.

Every training process writes ``<run>-rank<R>-<pid>.jsonl``: a header ``{"run", "rank", "world_size",
"start_step", "epoch", "cursor", "num_samples", "time"}`` and then one ``{"step", "epoch", "ids"}``
line per step, written (unbuffered) *before* the step's forward pass. A step that completed was
therefore logged by every rank of its gang (its all-reduce needed them all); a step that a kill
interrupted may be logged by some ranks only, and is undone by the resume, like every step after
the checkpoint the next gang resumed from.

The effective history replays the gangs in the order they started: a gang that resumed from step
S discards every step after S that earlier gangs logged, then adds its own.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    run: str
    world_size: int
    start_step: int
    epoch: int
    cursor: int
    num_samples: int
    time: float
    steps: dict[int, dict[int, tuple[int, list[int]]]] = field(default_factory=dict)  # step -> rank -> (epoch, ids)


@dataclass
class History:
    runs: list[Run]
    steps: dict[int, tuple[int, int, list[list[int]]]]  # step -> (epoch, world_size, ids per rank)
    num_samples: int

    def epochs(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for step in sorted(self.steps):
            epoch, _, shares = self.steps[step]
            for ids in shares:
                out[epoch].extend(ids)
        return dict(out)

    def world_sizes(self) -> list[int]:
        """The world size of each step, run-length encoded: e.g. [2, 3, 2]."""
        seq: list[int] = []
        for step in sorted(self.steps):
            w = self.steps[step][1]
            if not seq or seq[-1] != w:
                seq.append(w)
        return seq


def read_runs(directory: Path) -> list[Run]:
    runs: dict[str, Run] = {}
    for path in sorted(Path(directory).glob("*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            continue
        head, body = lines[0], lines[1:]
        run = runs.get(head["run"])
        if run is None:
            run = runs[head["run"]] = Run(head["run"], head["world_size"], head["start_step"], head["epoch"],
                                          head["cursor"], head["num_samples"], head["time"])
        assert (run.world_size, run.start_step, run.epoch, run.cursor) == (
            head["world_size"], head["start_step"], head["epoch"], head["cursor"]), f"ranks of {run.run} disagree: {head}"
        run.time = min(run.time, head["time"])
        for rec in body:
            shares = run.steps.setdefault(rec["step"], {})
            assert head["rank"] not in shares, f"{path.name}: step {rec['step']} logged twice by one rank"
            shares[head["rank"]] = (rec["epoch"], rec["ids"])
    return sorted(runs.values(), key=lambda r: r.time)


def effective_history(directory: Path) -> History:
    runs = read_runs(directory)
    assert runs, f"no sample logs in {directory}"
    steps: dict[int, tuple[int, int, list[list[int]]]] = {}
    for run in runs:
        assert run.start_step == 0 or run.start_step in steps, (
            f"{run.run} resumed from step {run.start_step}, which no earlier gang completed")
        for s in [s for s in steps if s > run.start_step]:
            del steps[s]  # rolled back: this gang resumed from an earlier checkpoint
        last = max(run.steps, default=run.start_step)
        for s in range(run.start_step + 1, last + 1):
            shares = run.steps.get(s, {})
            complete = sorted(shares) == list(range(run.world_size))
            if not complete:
                # only the step a kill interrupted may be incomplete, and nothing after it was done
                assert s == last, f"{run.run}: step {s} logged by ranks {sorted(shares)} of {run.world_size}, not the last"
                break
            epochs = {e for e, _ in shares.values()}
            assert len(epochs) == 1, f"{run.run}: ranks disagree on the epoch of step {s}: {epochs}"
            steps[s] = (epochs.pop(), run.world_size, [shares[r][1] for r in range(run.world_size)])
    return History(runs, steps, runs[0].num_samples)


def check_exactly_once(directory: Path, *, complete_epochs: int) -> History:
    """Assert that epochs 0..complete_epochs-1 each consumed every sample exactly once (and a partial
    last epoch, if any, no sample twice); return the history for further checks."""
    h = effective_history(directory)
    assert sorted(h.steps) == list(range(1, len(h.steps) + 1)), "the effective history has gaps"
    epochs = h.epochs()
    for e in range(complete_epochs):
        ids = epochs.get(e, [])
        counts = Counter(ids)
        twice = sorted(i for i, c in counts.items() if c > 1)
        missing = sorted(set(range(h.num_samples)) - counts.keys())
        assert not twice and not missing, (
            f"epoch {e}: {len(twice)} samples seen more than once (e.g. {twice[:5]}), "
            f"{len(missing)} never (e.g. {missing[:5]})")
    for e, ids in epochs.items():
        assert e < complete_epochs or len(ids) == len(set(ids)), f"partial epoch {e} repeats samples"
    assert max(epochs) <= complete_epochs, epochs.keys()
    return h
