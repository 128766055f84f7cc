"""A compact set of 64-bit doc_ids: sorted numpy runs, merged as they grow (8 bytes a document).

    python -c "import numpy as np; from ingest.docids import DocIdSet; s = DocIdSet(np.array([3, 1])); print(s.contains(np.array([1, 2])))"

A Python set of a hundred million ints takes several GB; this takes 800 MB and answers membership
for a whole batch with a binary search per run.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

MAX_RUNS = 8


class DocIdSet:
    """Membership of doc_ids, batch at a time."""

    def __init__(self, ids: np.ndarray | None = None):
        self._runs: list[np.ndarray] = []
        if ids is not None:
            self.add(ids)

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def add(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self._runs.append(np.unique(np.asarray(ids, dtype=np.int64)))
        if len(self._runs) > MAX_RUNS:
            self._runs = [np.unique(np.concatenate(self._runs))]

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of `ids` are in the set."""
        ids = np.asarray(ids, dtype=np.int64)
        found = np.zeros(len(ids), dtype=bool)
        for run in self._runs:
            pos = np.searchsorted(run, ids)
            pos[pos == len(run)] = len(run) - 1
            found |= run[pos] == ids
        return found


def read_doc_ids(fs, paths: list[str]) -> np.ndarray:
    """The doc_id column of Parquet parts, concatenated (reads only that column)."""
    if not paths:
        return np.empty(0, dtype=np.int64)
    arrays = [pq.read_table(path, columns=["doc_id"], filesystem=fs).column("doc_id").to_numpy() for path in paths]
    return np.concatenate(arrays).astype(np.int64, copy=False)
