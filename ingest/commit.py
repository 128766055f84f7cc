"""Committing an ingest job's finished inputs on top of whatever other jobs committed meanwhile.

    corpusdb ingest demo/db a.jsonl & corpusdb ingest demo/db b.jsonl   # both land, no document twice

A job deduplicates against the version it started from (and against itself) while it writes. At
each commit, `documents` may hold parts that other jobs committed since; the commit checks its
new parts against them, so `doc_id` stays unique in every version:
- an input another job committed meanwhile (the same file, read the same way) is dropped here;
- a document both hold is kept once: in the part that comes first in this job's input order when
  the other part is a sibling shard's (so shards running at once leave exactly the table of one
  run), and otherwise in the part committed first. The losing part is rewritten without it under
  a new name; committed parts are never changed in place.
If the commit loses the race to another writer, all of this is redone on top of the winner.
"""

from __future__ import annotations

import posixpath
import re
import threading
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpusdb import docindex
from corpusdb.db import Database
from corpusdb.storage import storage_errors
from corpusdb.versions import Snapshot
from corpusdb.ingest.docids import DocIdSet

PART_RE = re.compile(r"^part-([0-9a-f]{16})-(\d{5})(?:-([0-9a-f]{8}))?\.parquet$")
TABLE = "documents"


def part_name(key: str, chunk: int, token: str | None = None) -> str:
    """A documents part's file name: its input key, chunk number and a token unique to the write."""
    return f"part-{key}-{chunk:05d}-{token or uuid.uuid4().hex[:8]}.parquet"


@dataclass
class NewPart:
    """A part this job wrote and has not committed: where, what, and its doc_ids."""

    path: str  # relative to the database
    info: dict  # size, hash, rows, input, chunk
    ids: np.ndarray


@dataclass
class FinishedInput:
    """Inputs whose documents are all in written parts: one input, or several small ones that share
    their parts (committed together, or not at all)."""

    keys: list[str]
    urls: list[str]
    parts: list[NewPart] = field(default_factory=list)


class Committer:
    """Collects finished inputs and commits them, deduplicated against concurrent commits.

    Args:
        keys: every input key of the job, in job order (all shards compute the same list).
        sharded: this is one shard of a job.

    `seen` holds the doc_ids the job deduplicates against as it writes: those of the base
    version's parts outside the job (probed in the doc_id index, `corpusdb.docindex`, where it
    covers them; read where not), then of every concurrent part a commit has checked. Every commit
    that adds parts indexes them (and any part still unindexed).
    """

    def __init__(self, db: Database, keys: list[str], write_part, sharded: bool = False):
        self.db = db
        self.order = {key: position for position, key in enumerate(keys)}
        self.write_part = write_part
        parts = db.snapshot.tables[TABLE]
        # A shard settles documents it shares with its sibling shards' committed parts at commit,
        # by job order, like concurrent ones, so shards run in any order equal one run. A job run
        # whole deduplicates against everything committed before it, so a re-run over a folder
        # with one new file never moves documents out of parts committed earlier.
        self.known = {path for path, info in parts.items() if not sharded or info.get("input") not in self.order}
        self.seen = docindex.CommittedIds(
            db.location, db.snapshot, self.known, memory=DocIdSet(),
            read_ids=lambda paths: docindex.read_doc_ids(db.location, paths))
        self.finished: list[FinishedInput] = []
        self.uncommitted: set[str] = set()  # files this run wrote that no version references
        self.lock = threading.Lock()
        self.n_rows_removed = 0
        self.n_inputs_taken = 0  # committed by another job meanwhile
        self._ids: dict[str, np.ndarray] = {}

    def wrote(self, path: str) -> None:
        with self.lock:
            self.uncommitted.add(path)

    def add(self, finished: FinishedInput) -> None:
        with self.lock:
            self.finished.append(finished)

    def commit(self) -> None:
        """Commit every finished input (nothing if there is none)."""
        with self.lock:
            batch, self.finished = self.finished, []
        if not batch:
            return
        attempts: list[dict] = []

        def change(snapshot: Snapshot) -> str:
            outcome = self._apply(snapshot, batch)
            attempts.append(outcome)
            return outcome["summary"]

        committed = self.db.commit("ingest", change)
        outcome = attempts[-1]
        self.n_rows_removed += outcome["removed"]
        self.n_inputs_taken += outcome["taken"]
        live = set(committed.tables[TABLE])
        self.known |= {path for path in outcome["mine"] if path in live}
        for path in outcome["concurrent"]:
            self.seen.add(self._ids[path])
        written = {path for attempt in attempts for path in attempt["written"]}
        indexed = {entry["path"] for entry in committed.indexes.get(docindex.INDEX, {}).values()}
        for path in {path for attempt in attempts for path in attempt["index_written"]} - indexed:
            self.db.location.remove(self.db.location.join(path))  # runs of attempts that lost the race
        with self.lock:
            for path in [p for p in self.uncommitted if self.db.location.relpath(p) in live]:
                self.uncommitted.discard(path)
        for path in written - live:  # rewrites of attempts that lost the race
            self.db.location.remove(self.db.location.join(path))
        for part in (part for item in batch for part in item.parts):
            if part.path not in live:  # dropped or replaced by a rewrite: ours, never committed
                self.db.location.remove(self.db.location.join(part.path))
                with self.lock:
                    self.uncommitted.discard(self.db.location.join(part.path))

    def _doc_ids(self, path: str) -> np.ndarray:
        if path not in self._ids:
            self._ids[path] = docindex.read_doc_ids(self.db.location, [path])
        return self._ids[path]

    def _read_ids(self, path: str) -> np.ndarray:
        """A part's doc_ids, read for the index (not kept: these are parts committed long ago)."""
        return self._ids[path] if path in self._ids else docindex.read_doc_ids(self.db.location, [path])

    def _rank(self, info: dict, mine: bool) -> tuple:
        """Which copy of a document wins: lower ranks keep it."""
        key = info.get("input")
        if key in self.order:  # this job's own parts, or a sibling shard's
            return (0, self.order[key], int(info.get("chunk", 0)))
        return (-1,) if not mine else (1,)  # otherwise the part committed first keeps it

    def _apply(self, snapshot: Snapshot, batch: list[FinishedInput]) -> dict:
        parts = snapshot.tables[TABLE]
        outcome = {"removed": 0, "taken": 0, "written": [], "mine": [], "concurrent": [], "summary": "",
                   "index_written": []}
        todo = []
        for item in batch:
            if all(key in snapshot.inputs for key in item.keys):  # another job committed them all meanwhile
                outcome["taken"] += len(item.keys)
            else:  # shared parts: the documents some other job also holds are settled below
                todo.append(item)
        concurrent = [path for path in sorted(parts) if path not in self.known]
        outcome["concurrent"] = concurrent
        drop: dict[str, set] = {}  # path -> doc_ids it loses (concurrent parts and mine)
        if concurrent:
            # every concurrent doc_id once, sorted, with the part holding it: one search per part of
            # mine instead of a comparison per pair of parts (thousands of small inputs)
            owners = np.concatenate([np.full(len(self._doc_ids(o)), i, dtype=np.int64) for i, o in enumerate(concurrent)])
            everything = np.concatenate([self._doc_ids(o) for o in concurrent])
            order = np.argsort(everything, kind="stable")
            everything, owners = everything[order], owners[order]
            for part in (part for item in todo for part in item.parts):
                lo = np.searchsorted(everything, part.ids, side="left")
                hi = np.searchsorted(everything, part.ids, side="right")
                for position in np.flatnonzero(hi > lo):
                    doc = int(part.ids[position])
                    for owner in owners[lo[position] : hi[position]].tolist():
                        other = concurrent[owner]
                        loser = other if self._rank(parts[other], False) > self._rank(part.info, True) else part.path
                        drop.setdefault(loser, set()).add(doc)
        for path, ids in drop.items():
            if path in parts:  # a concurrent part loses documents to ours
                info = parts.pop(path)
                replaced = self._rewrite(path, info, ids, outcome)
                if replaced:
                    parts[replaced[0]] = replaced[1]
        for item in todo:
            for part in item.parts:
                path, info = part.path, part.info
                if path in drop:
                    replaced = self._rewrite(path, info, drop[path], outcome)
                    if not replaced:
                        continue
                    path, info = replaced
                parts[path] = info
                outcome["mine"].append(path)
            for key, url in zip(item.keys, item.urls):
                snapshot.inputs[key] = {"url": url}
        if outcome["mine"]:
            own = {part.path: part.ids for item in todo for part in item.parts}
            own.update({path: self._ids[path] for path in outcome["written"] if path in self._ids})
            outcome["index_written"] = docindex.update(
                self.db.location, snapshot, lambda path: own[path] if path in own else self._read_ids(path))
        rows = sum(part.info["rows"] for item in todo for part in item.parts) - outcome["removed"]
        outcome["summary"] = f"{sum(len(item.keys) for item in todo)} inputs, {rows:,} documents" + (
            f"; {outcome['removed']:,} duplicates of concurrent commits removed" if outcome["removed"] else "")
        return outcome

    def _rewrite(self, path: str, info: dict, ids: set, outcome: dict) -> tuple[str, dict] | None:
        """Write part `path` without documents `ids` under a new name; None where nothing is left."""
        location = self.db.location
        full = location.join(path)
        with storage_errors(location.url_of(full)):
            table = pq.read_table(full, filesystem=location.fs)
        keep = ~np.isin(table.column("doc_id").to_numpy(), np.fromiter(ids, dtype=np.int64, count=len(ids)))
        outcome["removed"] += int(len(keep) - keep.sum())
        if not keep.any():
            return None
        key, chunk = info.get("input"), int(info.get("chunk", 0))
        name = part_name(key, chunk) if key else f"part-{uuid.uuid4().hex}.parquet"
        written = self.write_part(location, table.filter(pa.array(keep)), name)
        self.wrote(written.path)
        new_path = location.relpath(written.path)
        outcome["written"].append(new_path)
        kept_info = {**info, "size": written.size, "hash": written.hash, "rows": int(keep.sum())}
        kept_info.pop(docindex.FIELD, None)  # a new part: indexed at this commit
        self._ids[new_path] = table.column("doc_id").to_numpy()[keep]
        return new_path, kept_info


def part_key(path: str) -> tuple[str, int] | None:
    """(input key, chunk) of a documents part's file name, or None for other names."""
    match = PART_RE.match(posixpath.basename(path))
    return (match.group(1), int(match.group(2))) if match else None
