"""Train a small MLP on scikit-learn's bundled digits (1797 8x8 images) with DDP on CPU (gloo).

Run it under torchrun (``trainyard-launch train_digits.py`` in a Trainyard job, or
``torchrun --nproc-per-node 2 train_digits.py`` locally), or as plain ``python train_digits.py``
for one non-distributed process. No network is needed: the data set ships with scikit-learn.

Checkpoints (rank 0 writes them) go to ``--checkpoint-dir`` or ``$TRAINYARD_CHECKPOINT_DIR`` every
``--checkpoint-every`` steps and at the end; a run that finds one resumes from it exactly: model,
optimizer, step, epoch and the position within the epoch. Progress lines follow
:mod:`trainyard_trainer.progress` (the epoch printed is the 0-based index the sampler uses).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
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
from torch.utils.data.distributed import DistributedSampler

from trainyard_trainer.checkpoint import Checkpointer
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
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--step-delay", type=float, default=float(os.environ.get("TRAINYARD_STEP_DELAY", "0")),
                   help="sleep this long after every step (tests: a deterministic window to kill a worker)")
    p.add_argument("--weights-out", default=None, help="write rank-<R>.json with a checksum of the final weights")
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

    sampler = DistributedSampler(range(len(y_train)), num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    batches_per_epoch = math.ceil(len(sampler) / args.batch_size)
    total_steps = args.epochs * batches_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    ckpt_dir = args.checkpoint_dir or os.environ.get("TRAINYARD_CHECKPOINT_DIR")
    ckpt = Checkpointer(ckpt_dir, keep=args.keep, rank=rank) if ckpt_dir else None

    # Resume: rank 0 reads the newest valid checkpoint and hands it to everyone, so all ranks start
    # from the same one even if the shared volume shows them different things for a moment.
    step, epoch, batch_in_epoch = 0, 0, 0
    loaded = ckpt.load_latest() if ckpt is not None and rank == 0 else None
    if distributed:
        box = [loaded]
        dist.broadcast_object_list(box, src=0)
        loaded = box[0]
    if loaded is not None:
        state, step = loaded
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        if int(state.get("world_size", world)) != world:
            batch_in_epoch = 0  # another sharding: redo this epoch from its start
        if batch_in_epoch >= batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0

    ddp = DDP(model) if distributed else model
    progress = Progress(args.log_every, rank=rank)
    progress.start(step)
    last_saved = step if loaded is not None else -1

    def save() -> None:
        nonlocal last_saved
        if ckpt is None or rank != 0 or last_saved == step:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "world_size": world,
            "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, type(None)))},
        }
        ckpt.save(state, step)
        progress.checkpoint(step, ckpt.last_stall_s, False)
        last_saved = step

    while step < total_steps and epoch < args.epochs:
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(sampler))
        while batch_in_epoch < batches_per_epoch and step < total_steps:
            idx = indices[batch_in_epoch * args.batch_size : (batch_in_epoch + 1) * args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(ddp(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            step += 1
            batch_in_epoch += 1
            logged = loss.detach().clone()
            if distributed and step % progress.log_every == 0:
                dist.all_reduce(logged)
                logged /= world
            progress.step(step, epoch, logged.item(), samples=len(idx) * world)
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save()
            if args.step_delay:
                time.sleep(args.step_delay)
        if batch_in_epoch >= batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
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
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
