"""The training order and augmentation seeds behind exact resume and DDP sharding.

* :class:`EpochSampler` — the training order is a pure function of (seed, epoch), sharded over DDP
  ranks; a run resumed mid-epoch skips the batches Lightning already consumed in it.
* :class:`SeededAugmentation` — augmentation of map ``i`` in epoch ``e`` is seeded by (seed, e, i),
  whichever worker or process draws it.
* :class:`ShardSampler` — validation maps split over the ranks, each map once.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(torch.utils.data.Sampler):
    """Training order as a pure function of (seed, epoch), sharded over DDP ranks, resumable mid-epoch.

    Yields ``(epoch, index)`` keys (see :class:`SeededAugmentation`). ``position()`` returns
    ``(epoch, batches already consumed in it)``; at iteration start those batches are skipped, so
    a run resumed mid-epoch sees exactly the maps the interrupted run would have seen next.
    """

    def __init__(self, n_items: int, seed: int, batch_size: int, position: Callable[[], tuple[int, int]] | None = None):
        if n_items < 1:
            raise ValueError("the training split holds no maps")
        self.n_items, self.seed, self.batch_size = int(n_items), int(seed), int(batch_size)
        self.position = position or (lambda: (0, 0))

    def _epoch_order(self, epoch: int) -> np.ndarray:
        rank, world = _world()
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_items)
        if world > 1:
            order = np.resize(order, math.ceil(self.n_items / world) * world)[rank::world]
        return order

    def __len__(self) -> int:
        _, world = _world()
        return math.ceil(self.n_items / world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, consumed_batches = self.position()
        if consumed_batches * self.batch_size >= len(self):  # saved at the end of an epoch
            epoch, consumed_batches = epoch + 1, 0
        order = self._epoch_order(epoch)[consumed_batches * self.batch_size:]
        return iter([(epoch, int(i)) for i in order])


class SeededAugmentation(torch.utils.data.Dataset):
    """Wraps a :class:`marsdust.data.DustDataset`: item ``(epoch, i)`` is map ``i`` augmented with a
    torch seed drawn from (seed, epoch, i), independent of worker and process."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        item_seed = int(np.random.default_rng([self.seed, int(epoch), int(index)]).integers(2**62))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            return self.dataset[int(index)]


class ShardSampler(torch.utils.data.Sampler):
    """Every world-size-th item from this rank (validation; no padding, nothing repeated)."""

    def __init__(self, n_items: int):
        self.n_items = int(n_items)

    def __iter__(self):
        rank, world = _world()
        return iter(range(rank, self.n_items, world))

    def __len__(self) -> int:
        rank, world = _world()
        return len(range(rank, self.n_items, world))
