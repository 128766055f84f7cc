"""True shingle Jaccard of candidate pairs, for `corpusdb minhash --verify exact`.

    corpusdb minhash demo/db --verify exact

The texts of the documents in the pairs are read once, in one scan of `documents`; each text's
shingle set (the same word n-grams as the signatures, as distinct 64-bit hashes) is kept while
the pairs are compared, so memory grows with the documents that have a candidate, not with the
corpus. A document is read in slices (`MinHasher.slice_chars`), so one huge text does not need
memory beyond its own size and its shingle set.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from corpusdb.dedup.minhash import MinHasher


class ExactJaccard:
    """Callable: (pairs (k, 2) of doc_ids) -> (k,) true Jaccard of the pairs' shingle sets."""

    def __init__(self, con: duckdb.DuckDBPyConnection, hasher: MinHasher, documents: str = "documents"):
        self.con, self.hasher, self.documents = con, hasher, documents

    def shingle_sets(self, doc_ids: np.ndarray) -> dict[int, np.ndarray]:
        """{doc_id: sorted distinct 64-bit shingle hashes} of the given documents."""
        wanted = pa.table({"doc_id": pa.array(np.unique(doc_ids), pa.int64())})
        self.con.register("_exact_ids", wanted)
        try:
            reader = self.con.sql(
                f"select d.doc_id, d.text from {self.documents} d semi join _exact_ids w using (doc_id)"
            ).to_arrow_reader(1024)
            sets: dict[int, np.ndarray] = {}
            for batch in reader:
                for doc_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                    sets[doc_id] = self.hasher.shingle_set(text or "")
        finally:
            self.con.unregister("_exact_ids")
        return sets

    def __call__(self, pairs: np.ndarray) -> np.ndarray:
        sets = self.shingle_sets(pairs.ravel())
        empty = np.empty(0, dtype=np.uint64)
        out = np.zeros(len(pairs), dtype=np.float64)
        for i, (a, b) in enumerate(pairs.tolist()):
            sa, sb = sets.get(a, empty), sets.get(b, empty)
            union = len(sa) + len(sb)
            if not union:
                continue
            shared = len(np.intersect1d(sa, sb, assume_unique=True))
            out[i] = shared / (union - shared)
        return out
