"""Train a small MLP on scikit-learn's bundled digits (1797 8x8 images) with DDP on CPU (gloo).

Run it under torchrun (``trainyard-launch train_digits.py`` in a Trainyard job, or
``torchrun --nproc-per-node 2 train_digits.py`` locally), or as plain ``python train_digits.py``
for one non-distributed process. No network is needed: the data set ships with scikit-learn.

Checkpoints (rank 0 writes them) go to ``--checkpoint-dir`` or ``$TRAINYARD_CHECKPOINT_DIR`` every
``--checkpoint-every`` steps and at the end; a run that finds one resumes from it exactly: model,
optimizer, step and the data position (:class:`trainyard_trainer.data.ShardedSampler`: the epoch
and how many of its samples the gang consumed). With another number of workers the rest of the
epoch is resharded over them: every training sample is still seen exactly once per epoch.
Progress lines follow :mod:`trainyard_trainer.progress` (the epoch printed is the sampler's 0-based
epoch); the resumed line carries the data position::

    [trainyard] resumed from step=200 epoch=8 sample=1024/1437

``--log-samples DIR`` makes every rank append the sample ids of every step to a JSON-lines file in
DIR (tests check exactly-once consumption from them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainyard_trainer.checkpoint import Checkpointer
from trainyard_trainer.data import ShardedSampler
from trainyard_trainer.progress import Progress


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32, help="per worker")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="model initialisation and sampler shuffling")
    p.add_argument("--data-seed", type=int, default=42, help="the fixed train/test split")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps in total")
    p.add_argument("--checkpoint-dir", default=None, help="default: $TRAINYARD_CHECKPOINT_DIR; neither: no checkpoints")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps; 0 disables periodic checkpoints")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--async-checkpoint", action="store_true", help="write checkpoints in a background thread")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--step-delay", type=float, default=float(os.environ.get("TRAINYARD_STEP_DELAY", "0")),
                   help="sleep this long after every step (tests: a deterministic window to kill a worker)")
    p.add_argument("--first-step-delay", type=float, default=0.0,
                   help="sleep this long before the first step (tests: a slow start, as a compiled model's)")
    p.add_argument("--weights-out", default=None, help="write rank-<R>.json with a checksum of the final weights")
    p.add_argument("--log-samples", default=None, help="append every step's sample ids to DIR/<run>-rank<R>-<pid>.jsonl")
    return p.parse_args(argv)


class MLP(nn.Module):
    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_data(seed: int):
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=seed, stratify=digits.target)
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def weights_checksum(model: nn.Module) -> str:
    sha = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        sha.update(name.encode())
        sha.update(t.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def open_samples_log(directory: str, rank: int, world: int, step: int, sampler: ShardedSampler):
    """An unbuffered JSON-lines file (a SIGKILL loses nothing written) that starts with this run's header."""
    run = os.environ.get("TORCHELASTIC_RUN_ID") or f"local-{os.getpid()}"
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / f"{run}-rank{rank}-{os.getpid()}.jsonl", "ab", buffering=0)  # noqa: SIM115 - closed at the end
    epoch, cursor, n = sampler.position()
    header = {"run": run, "rank": rank, "world_size": world, "start_step": step, "epoch": epoch, "cursor": cursor,
              "num_samples": n, "time": time.time()}
    f.write(json.dumps(header).encode() + b"\n")
    return f


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    distributed = "WORLD_SIZE" in os.environ and "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1

    x_train, y_train, x_test, y_test = load_data(args.data_seed)
    torch.manual_seed(args.seed)
    model = MLP(args.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)

    # Every rank gets its share of each global batch; the position goes into the checkpoints.
    sampler = ShardedSampler(len(y_train), args.batch_size, rank=rank, world_size=world, seed=args.seed)
    max_steps = args.max_steps if args.max_steps is not None else float("inf")

    ckpt_dir = args.checkpoint_dir or os.environ.get("TRAINYARD_CHECKPOINT_DIR")
    ckpt = Checkpointer(ckpt_dir, keep=args.keep, rank=rank, stateful={"data": sampler}) if ckpt_dir else None

    # Resume: rank 0 reads the newest valid checkpoint and hands it to everyone, so all ranks start
    # from the same one even if the shared volume shows them different things for a moment.
    step = 0
    loaded = ckpt.load_latest(broadcast=distributed) if ckpt is not None else None  # restores the sampler too
    if loaded is not None:
        state, step = loaded
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "data" not in state:  # a checkpoint from before the data position was saved
            sampler.set_epoch(int(state.get("epoch", 0)))

    ddp = DDP(model) if distributed else model
    # The step the training ends at (the percentage and the ETA of status.progress): what is left of
    # this epoch and the whole epochs after it, at this world size.
    total = step if sampler.epoch >= args.epochs else (
        step + len(sampler) + (args.epochs - sampler.epoch - 1) * sampler.steps_per_epoch())
    progress = Progress(args.log_every, rank=rank, total_steps=int(min(total, max_steps)))
    progress.start(step, sampler.position() if loaded is not None else None)
    if args.first_step_delay:
        time.sleep(args.first_step_delay)
    last_saved = step if loaded is not None else -1
    samples_log = open_samples_log(args.log_samples, rank, world, step, sampler) if args.log_samples else None

    def save() -> None:
        nonlocal last_saved
        if ckpt is None or rank != 0 or last_saved == step:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": sampler.epoch,
            "world_size": world,
            "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, type(None)))},
        }  # + "data": the sampler's position, added by the Checkpointer at this call
        ckpt.save(state, step, asynchronous=args.async_checkpoint)
        progress.checkpoint(step, ckpt.last_stall_s, args.async_checkpoint)
        last_saved = step

    while sampler.epoch < args.epochs and step < max_steps:
        epoch = sampler.epoch
        for indices in sampler:  # this rank's share of the next global batch
            if samples_log is not None:  # before the step: a completed step is always logged by every rank
                samples_log.write(json.dumps({"step": step + 1, "epoch": epoch, "ids": indices}).encode() + b"\n")
            idx = torch.as_tensor(indices, dtype=torch.long)
            optimizer.zero_grad(set_to_none=True)
            # The exact mean over the global batch (shares may differ by a sample in an epoch's last batch):
            # DDP averages the ranks' gradients, so scale each rank's sum by world / global batch.
            loss = F.cross_entropy(ddp(x_train[idx]), y_train[idx], reduction="sum") * (world / sampler.last_global_batch)
            loss.backward()
            optimizer.step()
            step += 1
            logged = loss.detach().clone()
            if distributed and step % progress.log_every == 0:
                dist.all_reduce(logged)
                logged /= world
            progress.step(step, epoch, logged.item(), samples=sampler.last_global_batch)
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                if distributed:
                    sampler.verify_lockstep()  # two tiny all-reduces per checkpoint: rank 0's position is everyone's
                save()
            if args.step_delay:
                time.sleep(args.step_delay)
            if step >= max_steps:
                break
    save()  # the final state, unless the last periodic save already was it

    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    if ckpt is not None:
        ckpt.close()
    if args.weights_out:
        out = Path(args.weights_out)
        out.mkdir(parents=True, exist_ok=True)
        doc = {"rank": rank, "world_size": world, "step": step, "sha256": weights_checksum(model), "accuracy": accuracy}
        (out / f"rank-{rank}.json").write_text(json.dumps(doc) + "\n")
    progress.done(step, accuracy)
    if samples_log is not None:
        samples_log.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
