"""Who reads what: ranks and DataLoader workers as one arithmetic value object (as mosaicml/streaming does).

    python -c "from train.world import World; print(World(rank=1, world_size=2, worker=0, num_workers=2).stream)"

Every (rank, worker) pair is one *stream*: stream = rank * num_workers + worker, of
num_streams = world_size * num_workers. Block b of an epoch's block order belongs to stream
b % num_streams, so the streams together read every block exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    """The position of one data-reading process among all of them."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers):
            raise ValueError(f"rank {self.rank}/{self.world_size} or worker {self.worker}/{self.num_workers} out of range")

    @property
    def stream(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def num_streams(self) -> int:
        return self.world_size * self.num_workers

    def blocks(self, order: list[int]) -> list[int]:
        """This stream's share of an epoch's block order."""
        return order[self.stream :: self.num_streams]

    def worker_samples(self, consumed: int, batch_size: int) -> int:
        """Samples this worker produced when its rank's DataLoader handed out `consumed` samples.

        A DataLoader takes whole batches from its workers in turn (worker 0, 1, ..., 0, ...), so
        after k batches worker w has given floor(k / W) batches, plus one if w < k mod W.
        """
        if consumed % batch_size:
            raise ValueError(f"consumed samples {consumed} is not a multiple of the batch size {batch_size}")
        batches = consumed // batch_size
        return (batches // self.num_workers + (1 if self.worker < batches % self.num_workers else 0)) * batch_size

    @classmethod
    def current(cls) -> World:
        """This process's world: rank from torch.distributed (or RANK/WORLD_SIZE), worker from the DataLoader."""
        import torch.distributed as dist
        from torch.utils.data import get_worker_info

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return cls(rank, world_size, worker, num_workers)
