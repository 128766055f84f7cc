"""Context windows over long documents, and packing of windows into rows without padding waste.

    python -c "from corpusdb.scoring.windows import windows; print(windows(10, context=4, stride=2))"

A document of tokens d is scored as x = [BOS] + d: every token of d is predicted from its prefix
(without a BOS token the first token has no prediction and is not scored). A document longer than
the context is cut into windows exactly as the transformers perplexity guide does: window k is
x[k*stride : k*stride + context] and scores only the predictions no earlier window scored, so
every token is scored exactly once and, past the first window, sees at least `context - stride`
tokens of context.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """Input x[start:end] of a document; its predictions from position `skip` on are scored."""

    doc: int  # index of the document in its chunk
    start: int
    end: int
    skip: int

    @property
    def length(self) -> int:
        return self.end - self.start


def windows(n: int, context: int, stride: int, doc: int = 0) -> list[Window]:
    """Windows over a sequence of `n` tokens (BOS included) with the given context and stride.

    Raises:
        ValueError: context < 2, or stride not in 1..context-1.
    """
    if context < 2:
        raise ValueError(f"context {context} must be at least 2 tokens")
    if not 1 <= stride <= context - 1:
        raise ValueError(f"stride {stride} must be between 1 and context - 1 = {context - 1}")
    if n < 2:
        return []
    out = []
    begin, scored_to = 0, 1  # targets x[1:scored_to] are scored
    while True:
        end = min(begin + context, n)
        # the prediction of target t sits at position t - 1 - begin of the window
        out.append(Window(doc, begin, end, scored_to - 1 - begin))
        if end == n:
            return out
        scored_to = end
        begin += stride


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Pack items of the given lengths into rows of at most `capacity` tokens (best fit, longest first).

    Returns rows as lists of item indices; each row's items in decreasing length. Rows come out
    roughly longest first, so consecutive rows batch with little padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, row) sorted
    for item in order:
        size = lengths[item]
        if size > capacity:
            raise ValueError(f"an item of {size} tokens does not fit a row of {capacity}")
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            space, row = free.pop(slot)
        else:
            space, row = capacity, len(rows)
            rows.append([])
        rows[row].append(item)
        if space - size > 0:
            bisect.insort(free, (space - size, row))
    return rows


@dataclass
class Batch:
    """Packed rows ready for a forward pass, with what to score and which document it belongs to."""

    input_ids: np.ndarray  # (rows, length) int64
    position_ids: np.ndarray  # (rows, length) int64, reset to 0 at each window
    target_ids: np.ndarray  # (rows, length) int64: the token each position predicts
    doc_index: np.ndarray  # (rows, length) int64: document of the prediction, -1 where not scored
    n_tokens: int  # real (non-padding) tokens in the batch


def make_batches(
    sequences: list[np.ndarray], context: int, stride: int, row_tokens: int, batch_tokens: int, pad_id: int,
) -> list[Batch]:
    """Cut each sequence (BOS already prepended) into windows, pack them into rows, batch the rows.

    Rows hold at most `row_tokens` tokens (at least the longest window); rows of one batch are padded
    to the longest; a batch holds as many rows as fit `batch_tokens` (at least one).
    """
    items = [w for doc, seq in enumerate(sequences) for w in windows(len(seq), context, stride, doc)]
    longest = max((w.length for w in items), default=0)
    if row_tokens < longest:
        raise ValueError(f"row_tokens {row_tokens} must be at least the longest window ({longest} tokens)")
    rows = pack([w.length for w in items], row_tokens)
    fills = [sum(items[i].length for i in row) for row in rows]
    order = sorted(range(len(rows)), key=lambda r: -fills[r])
    batches = []
    start = 0
    while start < len(order):
        width = fills[order[start]]
        count = max(1, batch_tokens // max(width, 1))
        chosen = order[start : start + count]
        start += count
        batches.append(_fill(sequences, items, [rows[r] for r in chosen], width, pad_id))
    return batches


def _fill(sequences: list[np.ndarray], items: list[Window], rows: list[list[int]], width: int, pad_id: int) -> Batch:
    shape = (len(rows), width)
    input_ids = np.full(shape, pad_id, dtype=np.int64)
    target_ids = np.full(shape, pad_id, dtype=np.int64)
    doc_index = np.full(shape, -1, dtype=np.int64)
    position_ids = np.zeros(shape, dtype=np.int64)
    n_tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            w = items[i]
            seq = sequences[w.doc]
            m = w.length
            input_ids[r, at : at + m] = seq[w.start : w.end]
            position_ids[r, at : at + m] = np.arange(m)
            target_ids[r, at : at + m - 1] = seq[w.start + 1 : w.end]
            doc_index[r, at + w.skip : at + m - 1] = w.doc
            at += m
        n_tokens += at
        # padding is one more "window" whose positions restart at 0, so it attends only to itself
        position_ids[r, at:] = np.arange(width - at)
    return Batch(input_ids, position_ids, target_ids, doc_index, n_tokens)
