"""A synthetic benchmark: a deep MLP on random data, sized by --hidden and --layers.

Parameters are about ``layers * hidden**2`` floats: ``--hidden 2048 --layers 6`` is ~25 M
parameters, ~100 MB of weights; a checkpoint (weights + SGD momentum) is about twice that.
It prints the standard progress lines and, for every checkpoint, how long training was stalled::

    [trainyard] checkpoint step=20 stall_s=0.123 async=true

Runs under torchrun (DDP, gloo) or as one plain process. Checkpoints go to ``--checkpoint-dir`` or
``$TRAINYARD_CHECKPOINT_DIR``; ``--async-checkpoint`` copies the state to CPU and writes it in the
background; ``--dcp`` writes sharded torch.distributed.checkpoint directories from every rank.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainyard_trainer.checkpoint import Checkpointer
from trainyard_trainer.progress import Progress


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16, help="per worker")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", default=None, help="default: $TRAINYARD_CHECKPOINT_DIR; neither: no checkpoints")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps; 0: only a final checkpoint")
    p.add_argument("--async-checkpoint", action="store_true")
    p.add_argument("--dcp", action="store_true", help="sharded torch.distributed.checkpoint from every rank")
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--step-delay", type=float, default=0.0)
    return p.parse_args(argv)


def build(hidden: int, layers: int) -> nn.Module:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(hidden, hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden, 10))
    return nn.Sequential(*mods)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    distributed = "WORLD_SIZE" in os.environ and "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    torch.manual_seed(args.seed)
    model = build(args.hidden, args.layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    n_params = sum(p.numel() for p in model.parameters())
    progress = Progress(args.log_every, rank=rank, total_steps=args.steps)
    progress.emit(f"[trainyard] model params={n_params} bytes={n_params * 4} world_size={world}")

    ckpt_dir = args.checkpoint_dir or os.environ.get("TRAINYARD_CHECKPOINT_DIR")
    ckpt = Checkpointer(ckpt_dir, keep=args.keep, rank=rank) if ckpt_dir else None
    step = 0
    if ckpt is not None:
        if args.dcp:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            got = ckpt.load_distributed(state)
            if got is not None:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                step = got
        else:
            loaded = ckpt.load_latest()  # every rank: each needs the optimizer state too
            if loaded is not None:
                model.load_state_dict(loaded[0]["model"])
                optimizer.load_state_dict(loaded[0]["optimizer"])
                step = loaded[1]

    ddp = DDP(model) if distributed else model
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank)
    progress.start(step)
    stalls: list[float] = []

    def save() -> None:
        if ckpt is None:
            return
        if args.dcp:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            ckpt.save_distributed(state, step, asynchronous=args.async_checkpoint)
        elif rank == 0:
            ckpt.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, step,
                      asynchronous=args.async_checkpoint)
        else:
            return
        stalls.append(ckpt.last_stall_s)
        progress.checkpoint(step, ckpt.last_stall_s, args.async_checkpoint)

    last_saved = step
    while step < args.steps:
        x = torch.randn(args.batch_size, args.hidden, generator=gen)
        y = torch.randint(0, 10, (args.batch_size,), generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        optimizer.step()  # with an async checkpoint in flight this mutates the live weights: it must not matter
        step += 1
        progress.step(step, 0, loss.item(), samples=args.batch_size * world)
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            save()
            last_saved = step
        if args.step_delay:
            time.sleep(args.step_delay)
    if step != last_saved:
        save()
    t0 = time.perf_counter()
    if ckpt is not None:
        ckpt.close()
    if stalls:
        progress.emit(
            f"[trainyard] checkpoint summary saves={len(stalls)} max_stall_s={max(stalls):.3f} "
            f"final_wait_s={time.perf_counter() - t0:.3f} async={'true' if args.async_checkpoint else 'false'}"
        )
    progress.done(step)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
