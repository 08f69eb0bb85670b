"""The digits MLP of :mod:`trainyard_trainer.examples.train_digits`, written with Horovod (PyTorch, gloo).

For users who bring a Horovod script; Trainyard's own path is torchrun (see
:mod:`trainyard_trainer.examples.horovod_to_torchrun` for the one-to-one replacement of each call).
Horovod is not in the trainer image: 0.28.1 (June 2023, the last release) does not build against
torch 2.13 as released (see docs/frameworks.md).

Run it with ``horovodrun --gloo -np 2 -H localhost:2 python -m trainyard_trainer.examples.train_hvd_digits``
or with the ``HOROVOD_*`` variables horovodrun sets (rank, size, gloo rendezvous address). Rank 0
checkpoints with :class:`trainyard_trainer.checkpoint.Checkpointer` to ``--checkpoint-dir`` or
``$TRAINYARD_CHECKPOINT_DIR``; a restarted job resumes from the newest checkpoint, which rank 0 reads
and broadcasts (``hvd.broadcast_object``). The progress lines are the standard ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import horovod.torch as hvd
import torch
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler

from trainyard_trainer.checkpoint import Checkpointer
from trainyard_trainer.examples.train_digits import MLP, load_data, weights_checksum
from trainyard_trainer.progress import Progress


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=42)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-dir", default=None, help="default: $TRAINYARD_CHECKPOINT_DIR; neither: no checkpoints")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--step-delay", type=float, default=float(os.environ.get("TRAINYARD_STEP_DELAY", "0")))
    p.add_argument("--weights-out", default=None, help="write rank-<R>.json with a checksum of the final weights")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hvd.init()
    rank, world = hvd.rank(), hvd.size()
    torch.set_num_threads(1)

    x_train, y_train, x_test, y_test = load_data(args.data_seed)
    torch.manual_seed(args.seed)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    sampler = DistributedSampler(range(len(y_train)), num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    batches_per_epoch = math.ceil(len(sampler) / args.batch_size)
    total_steps = args.epochs * batches_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    ckpt_dir = args.checkpoint_dir or os.environ.get("TRAINYARD_CHECKPOINT_DIR")
    ckpt = Checkpointer(ckpt_dir, rank=rank) if ckpt_dir else None
    loaded = ckpt.load_latest() if ckpt is not None and rank == 0 else None
    loaded = hvd.broadcast_object(loaded, root_rank=0, name="resume")
    step, epoch, batch_in_epoch = 0, 0, 0
    if loaded is not None:
        state, step = loaded
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        if int(state.get("world_size", world)) != world:
            batch_in_epoch = 0
        if batch_in_epoch >= batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0

    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    progress = Progress(args.log_every, rank=rank)
    progress.start(step)
    last_saved = step if loaded is not None else -1

    def save() -> None:
        nonlocal last_saved
        if ckpt is None or rank != 0 or last_saved == step:
            return
        ckpt.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch,
                   "batch_in_epoch": batch_in_epoch, "world_size": world}, step)
        progress.checkpoint(step, ckpt.last_stall_s, False)
        last_saved = step

    while step < total_steps and epoch < args.epochs:
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(sampler))
        while batch_in_epoch < batches_per_epoch and step < total_steps:
            idx = indices[batch_in_epoch * args.batch_size: (batch_in_epoch + 1) * args.batch_size]
            optimizer.zero_grad()  # Horovod's wrapper predates torch's set_to_none argument
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()  # Horovod averages the gradients over ranks here
            step += 1
            batch_in_epoch += 1
            logged = hvd.allreduce(loss.detach(), name="loss") if step % progress.log_every == 0 else loss.detach()
            progress.step(step, epoch, logged.item(), samples=len(idx) * world)
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save()
            if args.step_delay:
                time.sleep(args.step_delay)
        if batch_in_epoch >= batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
    save()

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
    hvd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
