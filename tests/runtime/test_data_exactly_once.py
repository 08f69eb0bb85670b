"""Exactly-once data consumption with real processes: `trainyard run`'s runtime trains the digits
example while workers are killed at random steps and inside checkpoint saves (sync and async), and
the job is resized 2 -> 3 -> 2 workers on the same checkpoint directory. The trainers log the
sample ids of every step; from those logs, every sample of every epoch was consumed exactly once."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.trainer.samples import check_exactly_once
from trainyard.api import Phase
from trainyard.local.backend import LocalWorker
from trainyard.local.runner import Runner, load_job

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("digits_with_pause.py")
N, BATCH, EPOCHS = 1437, 32, 6  # digits' training split; per-worker batch


def steps_for(world: int) -> int:
    """Steps of a whole epoch: global batches of BATCH * world, the last one partial."""
    return -(-N // (BATCH * world))


def job_yaml(tmp: Path, name: str, args: list[str], env: dict[str, str]) -> Path:
    doc = yaml.safe_load((REPO / "examples" / "digits-ddp.yaml").read_text())
    spec = doc["spec"]
    spec["failurePolicy"].update(backoffLimit=10, backoffSeconds=0)
    spec["runPolicy"]["activeDeadlineSeconds"] = 420  # the bound on a phase that goes wrong (~120 s here)
    trainer = spec["template"]["spec"]["containers"][0]
    trainer["command"] = ["trainyard-launch", str(SCRIPT)]
    trainer["args"] = args
    trainer["env"] = [*trainer.get("env", []), *({"name": k, "value": v} for k, v in env.items())]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Killer:
    """Kills workers from the progress lines: at the first step >= each threshold (a random worker),
    and the worker that announces it is holding inside a checkpoint write."""

    def __init__(self, runner: Runner, rng: random.Random, at_steps: list[int], world: int):
        self.runner, self.rng, self.at_steps, self.world = runner, rng, sorted(at_steps), world
        self.min_attempt = 0
        self.kills: list[str] = []

    def on_line(self, w: LocalWorker, line: str) -> None:
        if w.launch.attempt < self.min_attempt:
            return  # a late line of a gang that is already gone
        if "[trainyard-test] holding inside the write of" in line:
            self.kill(w.launch.index, w, f"inside the write ({line.split()[-1]})")
            return
        m = re.search(r"\[trainyard\] step=(\d+) ", line)
        if m and self.at_steps and int(m.group(1)) >= self.at_steps[0]:
            self.at_steps.pop(0)
            self.kill(self.rng.randrange(self.world), w, f"at step {m.group(1)}")

    def kill(self, index: int, w: LocalWorker, what: str) -> None:
        if self.runner.backend.kill(index, signal.SIGKILL):
            self.kills.append(f"attempt {w.launch.attempt}: killed worker {index} {what}")
            self.min_attempt = w.launch.attempt + 1


def phase(tmp: Path, name: str, world: int, rng: random.Random, *, max_steps: int, kill_at: list[int],
          pause_save_at: int | None = None, asynchronous: bool = False) -> tuple[Killer, list[str]]:
    args = ["--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--max-steps", str(max_steps),
            "--checkpoint-every", "10", "--log-every", "1", "--step-delay", "0.02",
            "--log-samples", str(tmp / "samples")]
    if asynchronous:
        args.append("--async-checkpoint")
    env = {}
    if pause_save_at is not None:
        env = {"DIGITS_TEST_PAUSE_SAVE_AT": str(pause_save_at), "DIGITS_TEST_PAUSE_ONCE": str(tmp / f"{name}.held")}
    job = load_job(job_yaml(tmp, name, args, env), workers=world)
    lines: list[str] = []

    def on_line(w: LocalWorker, line: str) -> None:
        if "[trainyard" in line:
            lines.append(f"{name} w{w.launch.index}.{w.launch.attempt} | {line}")
        killer.on_line(w, line)

    runner = Runner(job, tmp / name, tmp / "ckpt", tick=0.05, on_line=on_line)
    killer = Killer(runner, rng, kill_at, world)
    t0 = time.monotonic()
    result = runner.run()
    st = result.job.status
    print(f"{name}: {world} workers, {st.phase.value if st.phase else '-'} after {st.restarts} restart(s) "
          f"in {time.monotonic() - t0:.0f} s; {killer.kills}")
    assert st.phase == Phase.SUCCEEDED, f"{st.message}\n" + "\n".join(lines[-40:])
    assert st.restarts == len(killer.kills), killer.kills
    if pause_save_at is not None:  # a held worker only ends by a kill: one landed inside a save
        assert (tmp / f"{name}.held").exists(), "no gang held inside the checkpoint write"
    return killer, lines


def resumed(lines: list[str]) -> list[str]:
    return [line.split("| ", 1)[1] for line in lines if "resumed from step=" in line]


def test_exactly_once_across_kills_saves_and_a_resize(tmp_path):
    seed = int(os.environ.get("DATA_TEST_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    print(f"seed {seed} (DATA_TEST_SEED={seed} replays these kill steps)")
    (tmp_path / "ckpt").mkdir()
    total = 80 + (EPOCHS - 4) * steps_for(2)  # see below: epoch 3 ends at step 80 with 2 workers

    # 1. Two workers from scratch to step 50 (epoch 2, sample 256): one kill at a random step, one
    #    while rank 0 is inside the (synchronous) write of a checkpoint.
    hold1 = rng.choice([30, 40])
    k1, lines1 = phase(tmp_path, "p1-2w", 2, rng, max_steps=50, kill_at=[rng.randint(11, hold1 - 6)],
                       pause_save_at=hold1)
    # 2. Three workers on the same checkpoints (a resize): the rest of epoch 2 is dealt in global
    #    batches of 96 (13 steps, to step 63), then epoch 3 to step 75 (sample 1152). Asynchronous
    #    saves, and a kill while one is being written in the background while training goes on.
    k2, lines2 = phase(tmp_path, "p2-3w", 3, rng, max_steps=75, kill_at=[], pause_save_at=rng.choice([60, 70]),
                       asynchronous=True)
    # 3. Two workers again: the rest of epoch 3 (285 samples, 5 steps, to step 80), then epochs 4
    #    and 5; a kill at a random step.
    k3, lines3 = phase(tmp_path, "p3-2w", 2, rng, max_steps=10_000, kill_at=[rng.randint(82, total - 8)])

    # The resizes resumed where the other world size stopped, and said so.
    assert resumed(lines2)[0] == "[trainyard] resumed from step=50 epoch=2 sample=256/1437", lines2[:5]
    assert resumed(lines3)[0] == "[trainyard] resumed from step=75 epoch=3 sample=1152/1437", lines3[:5]
    done = [line for line in lines3 if "[trainyard] done step=" in line]
    assert done and f"done step={total} " in done[-1], done

    history = check_exactly_once(tmp_path / "samples", complete_epochs=EPOCHS)
    assert sorted(history.steps) == list(range(1, total + 1))
    assert history.world_sizes() == [2, 3, 2]
    assert [len(history.steps[s][2]) for s in (50, 51, 75, 76)] == [2, 3, 3, 2]
    print(f"{len(history.runs)} gangs, {len(k1.kills) + len(k2.kills) + len(k3.kills)} kills, "
          f"{total} steps at world sizes {history.world_sizes()}: all {EPOCHS} epochs x {N} samples exactly once")
    for line in resumed(lines1 + lines2 + lines3):
        print("  ", line)
