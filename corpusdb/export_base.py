"""What every export format's writer shares: the journal of the files it writes, text slices, tokenization.

    python -c "from corpusdb.export_base import JOURNAL; print(JOURNAL)"
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from corpusdb.storage import Location

JOURNAL = ".corpusdb-export.json"
TOKENIZE_BYTES = 8 * 1024 * 1024  # text per tokenizer call (and per slice of a JSONL part made Python objects)


def claim(out: Location, journal: dict, *names: str) -> None:
    """Record names in the journal before writing them: a crash never leaves a file nobody knows is ours."""
    journal["files"] = sorted(set(journal["files"]) | set(names))
    out.write_atomic(json.dumps(journal).encode(), JOURNAL)


def tokenize(tokenizer, piece: pa.Table | pa.RecordBatch, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(token ids with EOS after each row, tokens per row) of the rows' text.

    A 256 MB part in one tokenizer call held ~12 GB (an Encoding and Python ints per token);
    callers pass slices of TOKENIZE_BYTES of text, which become numpy arrays at once.
    """
    eos = tokenizer.eos_token_id
    encoded = tokenizer(piece.column("text").to_pylist(), add_special_tokens=False, verbose=False)["input_ids"]
    sizes = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter((t for ids in encoded for t in (*ids, eos)), dtype=dtype, count=int(sizes.sum()))
    return flat, sizes


def slices(table: pa.Table | pa.RecordBatch, limit: int | None = None) -> Iterator[pa.Table | pa.RecordBatch]:
    """Consecutive slices of `table` holding about `limit` bytes of text each (at least one row)."""
    limit = TOKENIZE_BYTES if limit is None else limit
    sizes = np.cumsum(table.column("n_bytes").to_numpy(zero_copy_only=False)) if table.num_rows else np.empty(0)
    start = 0
    while start < table.num_rows:
        base = sizes[start - 1] if start else 0
        end = max(int(np.searchsorted(sizes, base + limit, side="right")), start + 1)
        yield table.slice(start, end - start)
        start = end


def part_end(held: int, n_bytes: np.ndarray, limit: int) -> tuple[int, int]:
    """Where the open part ends in a batch whose rows have `n_bytes`, the part holding `held` bytes before it: the
    rows of the batch that go into the part (past the batch's end if the part goes on after it) and the part's
    bytes after the batch (if it goes on). A part ends at the row whose running text bytes reach `limit`, however
    the batches come: a sharded export's plan cuts its parts with this same rule."""
    running = held + np.cumsum(n_bytes)
    return int(np.searchsorted(running, limit, side="left")) + 1, int(running[-1]) if len(running) else held


class BytesCut:
    """`part_end` over rows as they come: where each export part ends (a sharded export's plan, in any format but
    MDS, whose cut is `mds.ShardCut`)."""

    read = ["n_bytes"]  # the columns `sizes` reads of a batch

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def sizes(self, batch) -> np.ndarray:
        """What each row of `batch` counts towards a part: its text bytes."""
        return batch.column("n_bytes").to_numpy(zero_copy_only=False)

    def end(self, sizes: np.ndarray) -> int:
        """How many of the next rows (of `sizes`) go into the open part: more than there are where the part goes on
        after them (it then holds them); the next part starts after the rows returned."""
        cut, running = part_end(self.held, sizes, self.limit)
        self.held = running if cut > len(sizes) else 0
        return cut
