"""Who does what: shards, launcher ranks and DataLoader workers as plain arithmetic (as mosaicml/streaming does).

    python -c "from corpusdb.world import World; print(World(rank=1, world_size=2, worker=0, num_workers=2).stream)"

- `parse_shard("i/n")`: the `--shard` of every job (ingest, score, minhash).
- `launched()`: (rank, world_size, local_rank) as torchrun set them; every job reads them here.
- `World`: every (rank, worker) pair is one *stream*: stream = rank * num_workers + worker, of
  num_streams = world_size * num_workers. Block b of an epoch's block order belongs to stream
  b % num_streams, so the streams together read every block exactly once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

LAUNCH_VARIABLES = (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """`"i/n"` (0-based) or (i, n) -> (i, n); None -> (0, 1)."""
    if shard is None:
        return 0, 1
    if isinstance(shard, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if not match:
            raise ValueError(f"shard {shard!r} is not i/n, e.g. 0/4 (shards are numbered from 0)")
        shard = int(match.group(1)), int(match.group(2))
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count} is out of range; use i/n with 0 <= i < n")
    return index, count


def launched() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun (or any launcher setting RANK, WORLD_SIZE, LOCAL_RANK) placed this process.

    (0, 1, 0) for a process started alone. Raises ValueError for values that are not a valid placement.
    """
    values = []
    for name, default in LAUNCH_VARIABLES:
        raw = os.environ.get(name, "")
        try:
            values.append(int(raw) if raw.strip() else default)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer; unset it or launch with torchrun") from None
    rank, world_size, local_rank = values
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank} is not a valid placement; "
                         "unset them or launch with torchrun")
    return rank, world_size, local_rank


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
            rank, world_size, _ = launched()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return cls(rank, world_size, worker, num_workers)
