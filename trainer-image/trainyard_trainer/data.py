"""Data sharding whose position survives restarts and resizes: every sample once per epoch.

A :class:`ShardedSampler` deals a data set of ``num_samples`` items to the ranks of a gang, one
*global batch* per optimizer step, and knows how far into the epoch the gang is. That position goes
into the checkpoint with the model (``Checkpointer(..., stateful={"data": sampler})``), so that a
gang restarted at any step, with the same or another number of ranks, continues the epoch where the
checkpoint left it::

    sampler = ShardedSampler(len(dataset), batch_size=32, seed=0)   # rank, world from torch.distributed
    ckpt = Checkpointer(ckpt_dir, stateful={"data": sampler})
    ckpt.load_latest(broadcast=True)                                 # model, optimizer ... and the position
    while sampler.epoch < epochs:
        for indices in sampler:                                      # this rank's share of one global batch
            train_step(x[indices], y[indices])

How it deals (all of it is a pure function of the seed, the epoch, the position and the world size):

* Epoch ``e`` visits the permutation ``torch.randperm(num_samples)`` seeded with ``seed + e`` (the
  identity with ``shuffle=False``). It does not depend on the world size.
* The position (``cursor``) is the number of samples of that permutation that the whole gang has
  consumed in the epoch. A step takes the next ``batch_size * world_size`` of them (the global
  batch) and rank ``r`` gets every ``world_size``-th one starting at ``r``: the ranks' shares are
  disjoint and together are exactly the global batch.
* Restarting at cursor ``c`` with ``W'`` ranks deals the rest, ``perm[c:]``, in global batches of
  ``batch_size * W'``. So a resize reshards what is left of the epoch and nothing is repeated or
  skipped; the next epoch starts afresh with the new world size.
* The tail: the epoch's last global batch holds what is left, so no sample is dropped and none is
  padded (repeated). If fewer samples than ranks would be left for it, they join the batch before,
  so every rank always gets ``batch_size`` or ``batch_size + 1`` samples, or fewer in the last
  batch only. A rank gets an empty batch only when fewer samples than ranks remain in the whole
  epoch, which can happen only right after a resize to more ranks. Uneven shares make DDP's
  average of per-rank mean losses weigh samples slightly unevenly in that one batch; for the
  exact global mean use ``loss_sum * world_size / sampler.last_global_batch``.

With a ``torch.utils.data.DataLoader`` whose ``num_workers > 0``, the loader pulls index batches
ahead of what training consumed; use :class:`ShardedLoader`, which counts the batches it hands to
you instead. The position is global, identical on every rank of a gang in lockstep: rank 0's copy
in a checkpoint is the gang's (:meth:`ShardedSampler.verify_lockstep` checks it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch

log = logging.getLogger("trainyard.data")

STATE_VERSION = 1


class Position(NamedTuple):
    """Where a gang is in its data: ``sample`` of ``num_samples`` consumed in the 0-based ``epoch``."""

    epoch: int
    sample: int
    num_samples: int


def _dist_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def window_sizes(remaining: int, global_batch: int, world_size: int) -> list[int]:
    """The sizes of the global batches that deal ``remaining`` samples (the tail rule above)."""
    if remaining <= 0:
        return []
    full, tail = divmod(remaining, global_batch)
    if tail and tail < world_size and full:
        return [global_batch] * (full - 1) + [global_batch + tail]
    return [global_batch] * full + ([tail] if tail else [])


class ShardedSampler:
    """Deals ``num_samples`` indices over the ranks, one global batch per step, resumable exactly.

    Iterating yields this rank's list of indices for each remaining step of the current epoch; when
    the epoch is exhausted the sampler moves to the next one by itself (no ``set_epoch`` needed).
    It is also a valid ``batch_sampler`` for a ``DataLoader`` with ``num_workers=0``.

    A batch counts as consumed when it is handed out: save a checkpoint after the optimizer step of
    the batches drawn so far, not between drawing a batch and training on it.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        if num_samples < 0:
            raise ValueError("num_samples must not be negative")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        r, w = _dist_rank_world()
        self.rank = r if rank is None else int(rank)
        self.world_size = w if world_size is None else int(world_size)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in a world of {self.world_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self._epoch = 0
        self._cursor = 0
        self._perm: tuple[int, list[int]] | None = None
        self.last_global_batch = 0
        """Samples in the global batch last handed out (all ranks together)."""
        self.resharded_from: int | None = None
        """The world size of the checkpoint that :meth:`load_state_dict` restored, if it was another."""

    # ------------------------------------------------------------------ position

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def _normalize(self) -> None:
        if self._cursor > 0 and self._cursor >= self.num_samples:
            self._epoch, self._cursor = self._epoch + 1, 0

    @property
    def epoch(self) -> int:
        """The epoch the next batch comes from (an exhausted epoch counts as the next one)."""
        self._normalize()
        return self._epoch

    @property
    def cursor(self) -> int:
        """Samples of the current epoch consumed by the whole gang."""
        self._normalize()
        return self._cursor

    def position(self) -> Position:
        self._normalize()
        return Position(self._epoch, self._cursor, self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        """DistributedSampler's API: a no-op for the current epoch (keeps the position), else jump to its start."""
        if int(epoch) != self.epoch:
            self._epoch, self._cursor = int(epoch), 0

    def steps_per_epoch(self) -> int:
        """Steps of a whole epoch at this world size."""
        return len(window_sizes(self.num_samples, self.global_batch_size, self.world_size))

    def __len__(self) -> int:
        """Steps left in the current epoch (a whole epoch's at its start)."""
        self._normalize()
        return len(window_sizes(self.num_samples - self._cursor, self.global_batch_size, self.world_size))

    # ------------------------------------------------------------------ dealing

    def permutation(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s visiting order: independent of the world size."""
        if self._perm is not None and self._perm[0] == epoch:
            return self._perm[1]
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            perm = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            perm = list(range(self.num_samples))
        self._perm = (epoch, perm)
        return perm

    def plan(self) -> list[tuple[int, int]]:
        """``(start, size)`` of each remaining global batch of the current epoch."""
        self._normalize()
        out, start = [], self._cursor
        for size in window_sizes(self.num_samples - start, self.global_batch_size, self.world_size):
            out.append((start, size))
            start += size
        return out

    def _share(self, perm: list[int], start: int, size: int) -> list[int]:
        return perm[start + self.rank : start + size : self.world_size]

    def batches(self) -> Iterator[list[int]]:
        """This rank's remaining batches of the current epoch, without moving the position."""
        epoch, plan = self.epoch, self.plan()
        perm = self.permutation(epoch)
        for start, size in plan:
            yield self._share(perm, start, size)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, plan = self.epoch, self.plan()
        perm = self.permutation(epoch)
        for start, size in plan:
            self._cursor = start + size  # consumed as soon as it is handed out
            self.last_global_batch = size
            yield self._share(perm, start, size)
            if self._epoch != epoch:  # load_state_dict/set_epoch during the iteration: stop
                return
        if self._epoch == epoch:
            self._epoch, self._cursor = epoch + 1, 0

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain ints and bools (safe for ``torch.load(weights_only=True)`` and DCP)."""
        self._normalize()
        return {
            "version": STATE_VERSION,
            "epoch": self._epoch,
            "cursor": self._cursor,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`, at this sampler's world size and batch size.

        Raises ``ValueError`` if the checkpoint was written for another data set size, seed or
        shuffling: its position would mean nothing for this permutation.
        """
        if int(state.get("version", 0)) != STATE_VERSION:
            raise ValueError(f"data position version {state.get('version')!r} is not {STATE_VERSION}")
        mismatched = [f"{k} {state[k]!r} != {getattr(self, k)!r}" for k in ("num_samples", "seed", "shuffle")
                      if state[k] != getattr(self, k)]
        if mismatched:
            raise ValueError("the checkpoint's data position is for another data set order: " + ", ".join(mismatched))
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        if epoch < 0 or not 0 <= cursor <= self.num_samples:
            raise ValueError(f"invalid data position epoch={epoch} cursor={cursor} of {self.num_samples}")
        self._epoch, self._cursor = epoch, cursor
        self._normalize()
        saved_world = int(state.get("world_size", self.world_size))
        self.resharded_from = saved_world if saved_world != self.world_size else None
        if self.resharded_from is not None and self.rank == 0:
            log.info("resharding the rest of epoch %d (%d of %d samples) over %d ranks (was %d)",
                     self._epoch, self.num_samples - self._cursor, self.num_samples, self.world_size, saved_world)

    def verify_lockstep(self, group: Any = None) -> None:
        """Collective: raise ``RuntimeError`` unless every rank is at the same position (call on all ranks)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        mine = torch.tensor([self.epoch, self.cursor], dtype=torch.long)
        lo, hi = mine.clone(), mine.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=group)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=group)
        if not torch.equal(lo, hi):
            raise RuntimeError(f"ranks disagree on the data position: min (epoch, cursor) {lo.tolist()}, "
                               f"max {hi.tolist()}; rank {self.rank} is at {mine.tolist()}")


# ---------------------------------------------------------------------- DataLoader wrapper


class _Dispatch:
    """The DataLoader's ``batch_sampler``: the remaining plan, not moving the sampler's position."""

    def __init__(self, sampler: ShardedSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[int]]:
        return self.sampler.batches()

    def __len__(self) -> int:
        return len(self.sampler)


def _empty_like(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[:0]
    if isinstance(batch, Mapping):
        out = {k: _empty_like(v) for k, v in batch.items()}
        return out if type(batch) is dict else type(batch)(out)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_empty_like(v) for v in batch))
    if isinstance(batch, (list, tuple)):
        if batch and all(isinstance(v, (torch.Tensor, Mapping, list, tuple)) for v in batch):
            return type(batch)(_empty_like(v) for v in batch)
        return type(batch)()  # a collated list of non-tensor leaves (e.g. strings): no items
    return batch


class _EmptySafeCollate:
    """collate_fn that turns an empty index batch into a zero-length batch of the data set's structure."""

    def __init__(self, dataset: Any, collate: Callable[[list], Any]):
        self.dataset = dataset
        self.collate = collate

    def __call__(self, samples: list) -> Any:
        if samples:
            return self.collate(samples)
        return _empty_like(self.collate([self.dataset[0]]))


class ShardedLoader:
    """A ``DataLoader`` over a map-style data set, sharded and resumable like :class:`ShardedSampler`.

    Use it when the DataLoader has worker processes: they prefetch index batches, so a sampler's own
    count runs ahead of training. This wrapper moves the position only when it hands a batch to
    you. ``state_dict``/``load_state_dict``/``epoch``/``position``/``last_global_batch`` are the
    sampler's (:attr:`sampler`); other keyword arguments go to the ``DataLoader`` (except
    ``sampler``, ``batch_sampler``, ``drop_last`` and ``in_order=False``, which would undo the dealing).
    """

    def __init__(self, dataset: Any, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None, **dataloader_kwargs: Any):
        from torch.utils.data import DataLoader
        from torch.utils.data._utils.collate import default_collate

        bad = {"sampler", "batch_sampler", "drop_last"} & dataloader_kwargs.keys()
        if bad or dataloader_kwargs.get("in_order", True) is False:
            raise ValueError(f"ShardedLoader deals the batches itself; drop {sorted(bad) or ['in_order=False']}")
        self.sampler = ShardedSampler(len(dataset), batch_size, seed=seed, shuffle=shuffle, rank=rank,
                                      world_size=world_size)
        collate = dataloader_kwargs.pop("collate_fn", None) or default_collate
        self.loader = DataLoader(dataset, batch_sampler=_Dispatch(self.sampler),
                                 collate_fn=_EmptySafeCollate(dataset, collate), **dataloader_kwargs)

    def __iter__(self) -> Iterator[Any]:
        s = self.sampler
        epoch, plan = s.epoch, s.plan()
        it = iter(self.loader)  # the loader's batch_sampler reads the same plan now
        for (start, size), batch in zip(plan, it, strict=True):
            s._cursor = start + size
            s.last_global_batch = size
            yield batch
            if s._epoch != epoch:
                return
        if s._epoch == epoch:
            s._epoch, s._cursor = epoch + 1, 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name: str) -> Any:
        if name in {"state_dict", "load_state_dict", "epoch", "cursor", "position", "last_global_batch",
                    "set_epoch", "steps_per_epoch", "resharded_from", "verify_lockstep", "num_samples",
                    "world_size", "rank", "global_batch_size"}:
            return getattr(self.__dict__["sampler"], name)
        raise AttributeError(name)
