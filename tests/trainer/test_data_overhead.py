"""What the data position costs: time per step and bytes per checkpoint, at the digits example's
sizes (1437 samples, 32 per worker, 2 workers). Printed (``pytest -s``) for the report; the only
assertions are on sizes, never on timings."""

from __future__ import annotations

import io
import time

import torch
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler
from trainyard_trainer.data import ShardedSampler
from trainyard_trainer.examples.train_digits import MLP

N, BATCH, WORLD, RANK = 1437, 32, 2, 0
EPOCHS = 40


def old_indices(epochs: int):
    """The example's former way: DistributedSampler's list for the epoch, sliced per step."""
    s = DistributedSampler(range(N), num_replicas=WORLD, rank=RANK, shuffle=True, seed=0)
    for epoch in range(epochs):
        s.set_epoch(epoch)
        indices = torch.tensor(list(s))
        for b in range(-(-len(s) // BATCH)):
            yield indices[b * BATCH : (b + 1) * BATCH]


def new_indices(epochs: int):
    s = ShardedSampler(N, BATCH, rank=RANK, world_size=WORLD, seed=0)
    while s.epoch < epochs:
        for ids in s:
            yield torch.as_tensor(ids, dtype=torch.long)


def per_step_us(gen) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(1 for _ in gen)
    return (time.perf_counter() - t0) / n * 1e6, n


def train_step_us(steps: int = 300) -> float:
    torch.manual_seed(0)
    x, y = torch.rand(N, 64), torch.randint(0, 10, (N,))
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    idx = torch.arange(BATCH)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1e6


def saved_bytes(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


def test_overhead_per_step_and_checkpoint_bytes():
    torch.set_num_threads(1)  # as in a worker (OMP_NUM_THREADS=1)
    old, new, steps = [], [], 0
    for _ in range(5):  # interleaved, best of 5: the machine is shared
        us, steps = per_step_us(old_indices(EPOCHS))
        old.append(us)
        new.append(per_step_us(new_indices(EPOCHS))[0])
    sampler = ShardedSampler(N, BATCH, rank=RANK, world_size=WORLD, seed=0)
    it = iter(sampler)
    for _ in range(10):
        next(it)
    t0 = time.perf_counter()
    for _ in range(10_000):
        sampler.state_dict()
    state_us = (time.perf_counter() - t0) / 10_000 * 1e6
    step_us = min(train_step_us() for _ in range(3))

    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    F.cross_entropy(model(torch.rand(4, 64)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()  # momentum buffers exist, as in a real checkpoint
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 10, "epoch": 0, "world_size": WORLD}
    without, with_data = saved_bytes(ckpt), saved_bytes({**ckpt, "data": sampler.state_dict()})
    added = with_data - without

    print(f"\ndata position overhead at digits sizes ({N} samples, {BATCH}/worker, {WORLD} workers, {steps} steps):")
    print(f"  indices per step: ShardedSampler {min(new):.2f} us, DistributedSampler+slicing {min(old):.2f} us "
          f"(+{min(new) - min(old):.2f} us)")
    print(f"  state_dict(): {state_us:.2f} us (once per checkpoint)")
    print(f"  one training step (MLP forward+backward+SGD, 1 thread): {step_us:.0f} us; the sampler is "
          f"{min(new) / step_us:.2%} of it, {(min(new) - min(old)) / step_us:+.2%} vs before")
    print(f"  checkpoint: {without} bytes without the data position, {with_data} with: +{added} bytes "
          f"({added / without:.3%})")
    assert 0 < added < 2048
