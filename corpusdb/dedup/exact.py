"""True shingle Jaccard of candidate pairs: how `corpusdb minhash` (`--verify exact`, the default)
decides the pairs whose MinHash estimate is too close to the threshold to trust.

    corpusdb minhash demo/db --verify-memory 512MB

The pairs are taken in groups whose documents fit a memory budget (`--verify-memory`, 1 GB): each
group's texts are read in one scan of `documents` and each text's shingle set (the same word
n-grams as the signatures, as distinct 64-bit hashes) is kept while the group's pairs are
compared; sets stay cached for the next calls (the same documents come back band after band)
while they fit. So memory is bounded by the setting, not by the number of documents with a
candidate; a document evicted and asked for again is read again. A document is read in slices
(`MinHasher.slice_chars`), so one huge text needs no memory beyond its own shingle set.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import duckdb
import numpy as np
import pyarrow as pa

from corpusdb.dedup.minhash import MinHasher

DEFAULT_MEMORY = 1 << 30
SET_BYTES_PER_TEXT_BYTE = 2.0  # a shingle set's sorted uint64 hashes and their working copies, per byte of text
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Bytes of a size such as 512MB, 1GB, 2GiB or 1000000.

    Raises:
        ValueError: not a number with an optional unit.
    """
    if isinstance(value, int):
        size = value
    else:
        match = SIZE_RE.match(str(value))
        if not match:
            raise ValueError(f"size {value!r} is not a number and a unit; give e.g. 512MB or 2GB")
        unit = match.group(2).lower().rstrip("b")
        power = "kmgt".find(unit[:1]) + 1 if unit else 0
        size = int(float(match.group(1)) * (1024 if unit.endswith("i") else 1000) ** power)
    if size < 1:
        raise ValueError(f"size {value!r} must be positive")
    return size


class ExactJaccard:
    """Callable: (pairs (k, 2) of doc_ids) -> (k,) true Jaccard of the pairs' shingle sets.

    `memory`: about the most bytes held at once: a quarter of it caches shingle sets (about twice
    the text of their documents) for the next calls, pairs are compared in groups whose sets fit
    an eighth (comparing takes about five times that); a single document larger than that is
    still compared, in a group of its own.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, hasher: MinHasher, documents: str = "documents",
                 memory: int = DEFAULT_MEMORY):
        self.con, self.hasher, self.documents, self.memory = con, hasher, documents, memory
        self.n_reads = 0  # scans of `documents` for texts so far
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()  # doc_id -> shingle set, least recently used first
        self.cached = 0  # bytes held by the cache

    def _read(self, sql: str, doc_ids: np.ndarray):
        self.con.register("_exact_ids", pa.table({"doc_id": pa.array(np.unique(doc_ids), pa.int64())}))
        try:
            yield from self.con.sql(sql.format(ids="_exact_ids")).to_arrow_reader(256)
        finally:
            self.con.unregister("_exact_ids")

    def shingle_sets(self, doc_ids: np.ndarray) -> dict[int, np.ndarray]:
        """{doc_id: sorted distinct 64-bit shingle hashes} of the given documents (read in one scan)."""
        self.n_reads += 1
        sets: dict[int, np.ndarray] = {}
        for batch in self._read(f"select d.doc_id, d.text from {self.documents} d semi join {{ids}} w using (doc_id)", doc_ids):
            texts = [text or "" for text in batch.column(1).to_pylist()]
            sets.update(zip(batch.column(0).to_pylist(), self.hasher.shingle_sets(texts)))
        return sets

    def groups(self, pairs: np.ndarray) -> list[np.ndarray]:
        """Indices of `pairs` in groups whose documents' shingle sets (cached, or about twice their
        text) fit an eighth of `memory` (comparing them takes about five times their size; the cache
        holds a quarter), in pair order."""
        docs = np.unique(pairs.ravel())
        cost = dict.fromkeys(docs.tolist(), 0)
        missing = []
        for doc_id in cost:
            shingles = self.cache.get(doc_id)
            if shingles is None:
                missing.append(doc_id)
            else:
                cost[doc_id] = shingles.nbytes + 64
        if missing:
            sql = f"select d.doc_id, d.n_bytes from {self.documents} d semi join {{ids}} w using (doc_id)"
            for batch in self._read(sql, np.array(missing, dtype=np.int64)):
                for doc_id, n_bytes in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                    cost[doc_id] = int(SET_BYTES_PER_TEXT_BYTE * (n_bytes or 0)) + 64
        budget = self.memory // 8
        if sum(cost.values()) <= budget:
            return [np.arange(len(pairs))]
        out, start, held, used = [], 0, set(), 0
        for i, (a, b) in enumerate(pairs.tolist()):
            extra = sum(cost[d] for d in {a, b} - held)
            if used + extra > budget and i > start:
                out.append(np.arange(start, i))
                start, held, used = i, set(), 0
                extra = sum(cost[d] for d in {a, b})
            held.update((a, b))
            used += extra
        out.append(np.arange(start, len(pairs)))
        return out

    def _sets_for(self, doc_ids: set[int]) -> None:
        """Bring the shingle sets of `doc_ids` into the cache, evicting others beyond a quarter of `memory`."""
        for doc_id in doc_ids & self.cache.keys():
            self.cache.move_to_end(doc_id)
        missing = doc_ids - self.cache.keys()
        if missing:
            for doc_id, shingles in self.shingle_sets(np.fromiter(missing, np.int64, len(missing))).items():
                self.cache[doc_id] = shingles
                self.cached += shingles.nbytes + 64
        while self.cached > self.memory // 4 and self.cache:
            oldest = next(iter(self.cache))
            if oldest in doc_ids:  # everything older is gone: what remains is this group's
                break
            self.cached -= self.cache.pop(oldest).nbytes + 64

    def __call__(self, pairs: np.ndarray) -> np.ndarray:
        out = np.zeros(len(pairs), dtype=np.float64)
        for group in self.groups(pairs):
            self._sets_for(set(pairs[group].ravel().tolist()))
            out[group] = jaccards(self.cache, pairs[group])
        return out


QUERY_VALUES = 1 << 22  # shingles looked up at a time when comparing pairs


def jaccards(sets: dict[int, np.ndarray], pairs: np.ndarray) -> np.ndarray:
    """Jaccard of each pair (k, 2) of doc_ids from their sorted distinct shingle hashes (0 when both
    sets are empty; a doc_id without a set has an empty one).

    Vectorised: the hashes of the pairs' documents get dense ranks, each document's ranks follow its
    index in a sorted key array (index << 32 | rank), and the smaller set of each pair is looked up
    in the larger one's keys with one searchsorted over every pair.
    """
    docs = np.unique(pairs.ravel())
    empty = np.empty(0, dtype=np.uint64)
    members = [sets.get(d, empty) for d in docs.tolist()]
    lengths = np.array([len(m) for m in members], dtype=np.int64)
    flat = np.concatenate(members) if members else empty
    ranks = np.unique(flat, return_inverse=True)[1].astype(np.uint64)
    del flat
    keys = (np.repeat(np.arange(len(docs), dtype=np.uint64), lengths) << np.uint64(32)) | ranks  # sorted
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    first, second = np.searchsorted(docs, pairs[:, 0]), np.searchsorted(docs, pairs[:, 1])
    swap = lengths[first] > lengths[second]
    small, large = np.where(swap, second, first), np.where(swap, first, second)
    counts = lengths[small]
    shared = np.zeros(len(pairs), dtype=np.int64)
    ends = np.cumsum(counts)
    start = 0
    while start < len(pairs):  # chunks of about QUERY_VALUES looked-up shingles
        stop = max(start + 1, int(np.searchsorted(ends, (ends[start] - counts[start]) + QUERY_VALUES, side="right")))
        c = counts[start:stop]
        total = int(c.sum())
        if total:
            segment = np.repeat(np.arange(stop - start), c)
            within = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
            query = (large[start:stop][segment].astype(np.uint64) << np.uint64(32)) | ranks[offsets[small[start:stop]][segment] + within]
            found = np.searchsorted(keys, query)
            hit = keys[np.minimum(found, len(keys) - 1)] == query
            shared[start:stop] = np.bincount(segment, weights=hit, minlength=stop - start).astype(np.int64)
        start = stop
    union = lengths[first] + lengths[second] - shared
    return np.where(union > 0, shared / np.maximum(union, 1), 0.0)
