"""The doc_id index of `documents`: sorted runs of ids on storage, probed with the new ids only.

    python -c "import corpusdb; db = corpusdb.open('demo/db'); print(db.snapshot.indexes)"

Ingest drops documents already in the database. Loading every committed doc_id for that costs
time and memory that grow with the database (1B ids: 8 GB and minutes before a 1,000-document job
writes anything); probing an index costs what the new documents touch. The index is a log of
sorted runs, as an LSM tree keeps them:

- A run is one file, `_index/doc_ids/run-<token>.bin`: its N ids as sorted little-endian int64, then
  the fences (every BLOCK-th id), then N and the number of fences. Probing k ids reads the fences
  once and at most k blocks of BLOCK ids (8 KB each), by range reads: local disk or object storage.
- The version records each run (`Snapshot.indexes["doc_ids"][name]`: path, rows, parts, size) and
  every documents part the run that holds its ids (`info["index"]`). A run is valid while all the
  parts it covers are live; a part another job rewrote (or any change that drops a part) voids its
  run, whose parts then count as unindexed. Unindexed parts (and databases older than the index)
  are read in full, once: every commit that adds documents indexes every unindexed part.
- Runs merge like a binary counter (a new run swallows the smaller runs while they are at most
  twice its size), so there are O(log n) runs and each id is rewritten O(log n) times in all.

Runs are written before the version that lists them is committed; a commit that loses its race
leaves its runs unlisted, and `vacuum` removes them like any other unlisted file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np

from corpusdb.storage import Location, storage_errors
from corpusdb.versions import Snapshot

INDEX = "doc_ids"
FOLDER = "_index/doc_ids"
FIELD = "index"  # a documents part's record: the run holding its ids
BLOCK = 1024  # ids per block: one range read of 8 KB
TABLE = "documents"


def read_doc_ids(location: Location, paths: list[str]) -> np.ndarray:
    """The doc_id column of parts (paths relative to the database), concatenated (reads only that column)."""
    import pyarrow.parquet as pq

    arrays = []
    for path in paths:
        full = location.join(path)
        with storage_errors(location.url_of(full)):
            arrays.append(pq.read_table(full, columns=["doc_id"], filesystem=location.fs).column("doc_id").to_numpy())
    return np.concatenate(arrays).astype(np.int64, copy=False) if arrays else np.empty(0, dtype=np.int64)


def members(snapshot: Snapshot) -> dict[str, list[str]]:
    """The live documents parts each run name is recorded for, in one pass over the parts."""
    found: dict[str, list[str]] = {}
    for path, info in snapshot.tables.get(TABLE, {}).items():
        if FIELD in info:
            found.setdefault(info[FIELD], []).append(path)
    return found


def runs_of(snapshot: Snapshot) -> dict[str, dict]:
    """The valid runs of `snapshot`'s index, by name (a run is valid while every part it covers is live)."""
    live = members(snapshot)
    return {name: entry for name, entry in snapshot.indexes.get(INDEX, {}).items()
            if len(live.get(name, ())) == entry["parts"]}


def unindexed(snapshot: Snapshot) -> list[str]:
    """The live documents parts no valid run covers, sorted."""
    valid = runs_of(snapshot)
    return sorted(path for path, info in snapshot.tables.get(TABLE, {}).items() if info.get(FIELD) not in valid)


class Run:
    """One sorted run on storage, probed block by block (fences read on first use, blocks cached)."""

    def __init__(self, location: Location, entry: dict, cache_blocks: int = 32768):
        self.location, self.path, self.rows = location, location.join(entry["path"]), int(entry["rows"])
        self._fences: np.ndarray | None = None
        self._blocks: dict[int, np.ndarray] = {}
        self.cache_blocks = cache_blocks  # 32,768 blocks: 256 MB at most
        self.bytes_read = 0

    def _read(self, starts: list[int], ends: list[int]) -> list[bytes]:
        with storage_errors(self.location.url_of(self.path)):
            data = self.location.fs.cat_ranges([self.path] * len(starts), starts, ends)
        for chunk in data:
            if isinstance(chunk, Exception):
                raise chunk
        self.bytes_read += sum(len(chunk) for chunk in data)
        return data

    def fences(self) -> np.ndarray:
        if self._fences is None:
            n_fences = -(-self.rows // BLOCK)
            start = self.rows * 8
            [data] = self._read([start], [start + n_fences * 8])
            self._fences = np.frombuffer(data, dtype="<i8")
        return self._fences

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of `ids` (any order) the run holds."""
        found = np.zeros(len(ids), dtype=bool)
        if self.rows == 0 or len(ids) == 0:
            return found
        block = np.searchsorted(self.fences(), ids, side="right") - 1
        wanted = np.unique(block[block >= 0]).tolist()
        if not wanted:
            return found  # every id is below the run's first
        missing = [b for b in wanted if b not in self._blocks]
        if missing:
            starts = [b * BLOCK * 8 for b in missing]
            ends = [min((b + 1) * BLOCK, self.rows) * 8 for b in missing]
            if len(self._blocks) + len(missing) > self.cache_blocks:
                self._blocks.clear()
            for b, data in zip(missing, self._read(starts, ends)):
                self._blocks[b] = np.frombuffer(data, dtype="<i8")
        # the wanted blocks in order are a sorted slice of the run holding every id that can match:
        # one search for all ids, however many blocks they touch
        values = np.concatenate([self._blocks[b] for b in wanted])
        pos = np.minimum(np.searchsorted(values, ids), len(values) - 1)
        return values[pos] == ids

    def all_ids(self) -> np.ndarray:
        [data] = self._read([0], [self.rows * 8])
        return np.frombuffer(data, dtype="<i8")


def _encode(ids: np.ndarray) -> bytes:
    ids = np.ascontiguousarray(ids, dtype="<i8")
    return ids.tobytes() + ids[::BLOCK].tobytes() + np.array([len(ids), -(-len(ids) // BLOCK)], dtype="<i8").tobytes()


def write_run(location: Location, ids: np.ndarray) -> tuple[str, dict]:
    """Write `ids` (sorted) as a new run; returns its name and its version entry (parts still 0)."""
    name = f"run-{uuid.uuid4().hex[:16]}"
    written = location.write_atomic(_encode(ids), FOLDER, f"{name}.bin")
    return name, {"path": location.relpath(written.path), "rows": int(len(ids)), "parts": 0, "size": written.size}


def update(location: Location, snapshot: Snapshot, ids_of: Callable[[str], np.ndarray]) -> list[str]:
    """Index every unindexed live documents part of `snapshot` (in place); returns the files written.

    `ids_of(path)` gives a part's doc_ids (the job's own parts from memory, others read). The new
    run merges with the smaller runs while they are at most twice its size; runs that are no
    longer valid are dropped from the version (their parts are among those indexed here).
    """
    parts = snapshot.tables.get(TABLE, {})
    todo = unindexed(snapshot)
    valid = runs_of(snapshot)
    if not todo:
        if len(valid) != len(snapshot.indexes.get(INDEX, {})):
            snapshot.indexes[INDEX] = valid
        return []
    ids = np.sort(np.concatenate([np.asarray(ids_of(path), dtype=np.int64) for path in todo]))
    covered, covers = list(todo), members(snapshot)
    by_size = sorted(valid.items(), key=lambda item: (item[1]["rows"], item[0]))
    while by_size and by_size[0][1]["rows"] <= 2 * len(ids):
        name, entry = by_size.pop(0)
        old = Run(location, entry).all_ids()
        ids = np.concatenate([old, ids])
        ids.sort(kind="stable")
        covered += covers[name]
        del valid[name]
    name, entry = write_run(location, ids)
    entry["parts"] = len(covered)
    for path in covered:
        parts[path][FIELD] = name
    valid[name] = entry
    snapshot.indexes[INDEX] = valid
    return [entry["path"]]


class CommittedIds:
    """Membership of the doc_ids a version holds and of ids added since (`add`), batch at a time.

    Valid runs are probed on storage; unindexed parts are read once, into memory, with the ids added
    (`DocIdSet`). `parts_read` lists the parts whose ids were read; `bytes_read` sums the index.
    """

    def __init__(self, location: Location, snapshot: Snapshot, paths: set[str], read_ids: Callable[[list[str]], np.ndarray],
                 memory):
        valid, covers = runs_of(snapshot), members(snapshot)
        parts = snapshot.tables.get(TABLE, {})
        # a run counts only where it covers nothing but parts of `paths` (otherwise read those parts)
        whole = {name for name in valid if all(path in paths for path in covers[name])}
        self.runs = [Run(location, valid[name]) for name in sorted(whole)]
        self.parts_read = sorted(path for path in paths if parts[path].get(FIELD) not in whole)
        self.memory = memory
        self.memory.add(read_ids(self.parts_read))

    @property
    def bytes_read(self) -> int:
        return sum(run.bytes_read for run in self.runs)

    def __len__(self) -> int:
        return len(self.memory) + sum(run.rows for run in self.runs)

    def add(self, ids: np.ndarray) -> None:
        self.memory.add(ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        found = self.memory.contains(ids)
        for run in self.runs:
            rest = np.flatnonzero(~found)
            if len(rest) == 0:
                break
            found[rest] = run.contains(ids[rest])
        return found


def repeated(location: Location, snapshot: Snapshot, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of new parts' doc_ids `ids`: the ids they repeat among themselves, and those `snapshot`'s documents
    already hold (probing the index with these ids only, plus any unindexed parts read whole)."""
    from corpusdb.ingest.docids import DocIdSet

    ids = np.sort(np.asarray(ids, dtype=np.int64), kind="stable")
    within = np.unique(ids[1:][ids[1:] == ids[:-1]]) if len(ids) > 1 else ids[:0]
    committed = CommittedIds(location, snapshot, set(snapshot.tables.get(TABLE, {})), memory=DocIdSet(),
                             read_ids=lambda paths: read_doc_ids(location, paths))
    return within, ids[committed.contains(ids)]
