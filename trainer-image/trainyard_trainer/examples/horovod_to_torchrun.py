"""Horovod (PyTorch) -> torch.distributed under torchrun: each Horovod call beside what replaces it, checked.

Run it the way a Trainyard job would (``trainyard-launch horovod_to_torchrun.py``), or locally:

    torchrun --nproc-per-node 2 horovod_to_torchrun.py

Every rank checks that the torch.distributed version does what the Horovod call did (an average over
ranks, a broadcast from rank 0, ...) and exits non-zero if any check fails; rank 0 prints one
``[horovod->torchrun] ok ...`` line per check. The training part uses the standard progress lines.

=====================================  ==================================================================
Horovod                                under torchrun
=====================================  ==================================================================
``hvd.init()``                         ``dist.init_process_group("gloo")`` (``"nccl"`` on GPUs); torchrun
                                       sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
``hvd.rank()`` / ``hvd.size()``        ``dist.get_rank()`` / ``dist.get_world_size()``
``hvd.local_rank()``                   ``int(os.environ["LOCAL_RANK"])`` (GPU: ``torch.cuda.set_device``)
``hvd.local_size()``                   ``int(os.environ["LOCAL_WORLD_SIZE"])``
``hvd.cross_rank()``                   ``int(os.environ["GROUP_RANK"])`` (the node's index)
``hvd.DistributedOptimizer(opt)``      keep ``opt`` as it is and wrap the model: ``DDP(model)``; DDP
                                       averages the gradients during ``backward()``, as Horovod's
                                       default ``op=hvd.Average`` did
``backward_passes_per_step=k``         ``with ddp.no_sync():`` around the first k-1 backward passes
``compression=hvd.Compression.fp16``   ``ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)``
``hvd.broadcast_parameters(sd, 0)``    ``DDP(model)`` broadcasts rank 0's parameters and buffers when it
                                       is built; by hand: ``dist.broadcast(t, src=0)`` for each tensor
``hvd.broadcast_optimizer_state``      not needed from a fresh start; on resume every rank loads the
                                       same checkpoint (or rank 0 loads and ``broadcast_object_list``)
``hvd.allreduce(t)`` (average)         ``t = t.clone(); dist.all_reduce(t); t /= world`` (in place, SUM;
                                       ``ReduceOp.AVG`` exists on NCCL only)
``hvd.allgather(t)``                   ``dist.all_gather(out_list, t); torch.cat(out_list)`` (equal
                                       shapes; for ragged first dims gather the sizes first)
``hvd.broadcast(t, root_rank=0)``      ``dist.broadcast(t, src=0)`` (in place)
``hvd.broadcast_object(o, 0)``         ``box = [o]; dist.broadcast_object_list(box, src=0); o = box[0]``
``hvd.join()``                         ``torch.distributed.algorithms.join.Join([ddp])`` for uneven inputs
``horovodrun -np 4 -H a:2,b:2``        ``torchrun --nnodes 2 --nproc-per-node 2``; in Trainyard
                                       ``workers: 2, procsPerWorker: 2``
``hvd.elastic.run`` + ``state.commit`` Trainyard elastic workers (min:max) + a checkpoint every N steps;
                                       a new gang resumes from the newest one
=====================================  ==================================================================
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainyard_trainer.progress import Progress


def check(ok: bool, what: str, rank: int) -> None:
    if not ok:
        raise SystemExit(f"[horovod->torchrun] rank {rank}: FAILED {what}")
    if rank == 0:
        print(f"[horovod->torchrun] ok {what}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16, help="per rank")
    args = p.parse_args(argv)

    # hvd.init()
    dist.init_process_group("gloo")
    # hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size()
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    check(0 <= local_rank < local_world <= world, f"rank={rank} size={world} local_rank={local_rank} of {local_world}", rank)

    # hvd.allreduce(t) -> the average over ranks, as a new tensor
    t = torch.tensor([float(rank + 1)])
    avg = t.clone()
    dist.all_reduce(avg, op=dist.ReduceOp.SUM)
    avg /= world
    check(torch.allclose(avg, torch.tensor([(world + 1) / 2])) and t.item() == rank + 1,
          f"allreduce average = {avg.item()}", rank)

    # hvd.allgather(t) -> concatenated along dim 0, in rank order
    parts = [torch.empty(2) for _ in range(world)]
    dist.all_gather(parts, torch.full((2,), float(rank)))
    gathered = torch.cat(parts)
    check(gathered.tolist() == [float(r) for r in range(world) for _ in range(2)], f"allgather = {gathered.tolist()}", rank)

    # hvd.broadcast(t, root_rank=0) and hvd.broadcast_object(obj, root_rank=0)
    b = torch.tensor([float(rank * 10 + 7)])
    dist.broadcast(b, src=0)
    box = [{"from": rank, "lr": 0.1}]
    dist.broadcast_object_list(box, src=0)
    check(b.item() == 7.0 and box[0] == {"from": 0, "lr": 0.1}, "broadcast tensor and object from rank 0", rank)

    # hvd.broadcast_parameters(model.state_dict(), root_rank=0): DDP does it when built
    torch.manual_seed(1234 + rank)  # deliberately different initial weights on every rank
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    ddp = DDP(model)
    w = model[0].weight.detach().clone()
    dist.broadcast(w, src=0)
    check(torch.equal(w, model[0].weight.detach()), "DDP(model) broadcast rank 0's parameters", rank)

    # hvd.DistributedOptimizer(opt): a plain optimizer on the DDP model; gradients are averaged in backward()
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(99 + rank)  # every rank its own data
    x, y = torch.randn(args.batch_size, 64, generator=g), torch.randint(0, 10, (args.batch_size,), generator=g)
    ref = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    ref.load_state_dict(model.state_dict())
    F.cross_entropy(ref(x), y).backward()  # this rank's own gradient ...
    manual = [p.grad.clone() for p in ref.parameters()]
    for m in manual:  # ... averaged by hand, as Horovod's allreduce in the optimizer did
        dist.all_reduce(m)
        m /= world
    optimizer.zero_grad()
    F.cross_entropy(ddp(x), y).backward()
    check(all(torch.allclose(p.grad, m, atol=1e-6) for p, m in zip(model.parameters(), manual, strict=True)),
          "DDP gradients == allreduce-averaged gradients (hvd.DistributedOptimizer)", rank)

    # a short training run with the standard progress lines
    progress = Progress(log_every=5, rank=rank)
    progress.start(0)
    for step in range(1, args.steps + 1):
        x, y = torch.randn(args.batch_size, 64, generator=g), torch.randint(0, 10, (args.batch_size,), generator=g)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        optimizer.step()
        logged = loss.detach().clone()
        dist.all_reduce(logged)
        progress.step(step, 0, logged.item() / world, samples=args.batch_size * world)
    final = model[2].weight.detach().clone()
    ref_final = final.clone()
    dist.broadcast(ref_final, src=0)
    check(torch.equal(final, ref_final), "replicas identical after training", rank)
    progress.done(args.steps)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
