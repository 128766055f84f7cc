"""Committing scores: a score name bound to one model's content and settings, parts committed as they finish.

    corpusdb score demo/db --model out/teacher --as teacher

The first commit of a job records the model's identity under the score name (a content hash of
its files, its tokenizer's hash and the scoring settings); every later commit checks it again on
top of whatever was committed meanwhile, so a name never holds scores of two models, even when
two jobs race. Parts that scored a document another job committed first are rewritten without
it, so every (doc_id, model) has one row: each commit checks its parts against every part other
jobs committed since this one registered (its stream never saw those), but those of jobs whose
doc_id residues it does not share (the ranks and shards of one sharded job: each part records its
job's residue and modulus).
"""

from __future__ import annotations

import math
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpusdb.covers import FIELD as COVERS
from corpusdb.errors import CatalogError, ConflictError
from corpusdb.tables import schema_key
from corpusdb.storage import WrittenFile
from corpusdb.versions import Snapshot

TABLE = "scores"
SHARD = "shard"  # a part's record: the job's (residue, modulus) of doc_ids
# what must match for scores to be comparable; paths, library versions and devices need not
SETTINGS = ("content_hash", "n_parameters", "vocab_size", "tokenizer_hash", "context", "stride", "bos_id", "precision",
            "unit", "instances")


def prefix(name: str) -> str:
    """The folder of a score name's parts, relative to the database."""
    return f"scores/model={name}/"


def check_identity(name: str, old: dict | None, entry: dict) -> None:
    """Refuse to put scores of other content or settings under a name that holds some already.

    Only keys present in both are compared, so a check before the model is loaded covers what
    is known by then (content, explicit settings) and the full check follows after loading.

    Raises:
        CatalogError: naming what differs and the ways out.
    """
    if not old:
        return
    old = {**old, "unit": old.get("unit") or "documents"}  # names from before instances scored documents
    ways_out = (f"score under another --as name, drop the old scores first (`corpusdb models DB --drop {name}`), "
                "or pass --replace to rescore everything")
    for key in SETTINGS:
        if key not in old or key not in entry or old[key] == entry[key]:
            continue
        if key == "content_hash":
            raise CatalogError(
                f"scores {name!r} were made by another model: {old.get('model')!r} (content {old[key][:12]}), "
                f"not {entry.get('model')!r} (content {entry[key][:12]}), e.g. a checkpoint retrained in place; {ways_out}"
            )
        raise CatalogError(f"scores {name!r} were made with {key}={old[key]!r}, not {entry[key]!r}; "
                           f"pass the same settings, another --as name, or --replace to rescore everything")


class ScoreCommitter:
    """Registers a score name and commits the parts a scoring job writes."""

    def __init__(self, db, name: str, entry: dict, shard: tuple[int, int] = (0, 1)):
        self.db, self.name, self.entry = db, name, entry
        self.shard = shard  # (residue, modulus): this job scores the doc_ids congruent to residue
        # this name's parts whose documents this job does not score: those its stream saw as scored (committed before
        # it registered) and its own; a part another job commits meanwhile is checked at every later commit, since
        # the stream never saw it (it may hold documents this job's later parts score too)
        self.known: set[str] = set()
        self._ids: dict[str, np.ndarray] = {}  # doc_ids of other jobs' parts, read once
        self.pending: list[tuple[str, dict, np.ndarray]] = []
        self.uncommitted: set[str] = set()
        self.registered = False

    def register(self, replace: bool) -> None:
        """Record the identity under the name (dropping the name's parts first with `replace`)."""
        def change(snapshot: Snapshot) -> str:
            parts = snapshot.tables[TABLE]
            if replace:
                for path in [p for p in parts if p.startswith(prefix(self.name))]:
                    del parts[path]
            else:
                check_identity(self.name, snapshot.models.get(self.name), self.entry)
            old = snapshot.models.get(self.name)
            if replace or old is None or "content_hash" not in old:  # a name from before content hashes gets one
                snapshot.models[self.name] = self.entry
            return f"scores {self.name}" + (" replaced" if replace else "")

        committed = self.db.commit("score", change)
        self.known = set(committed.parts(TABLE, prefix(self.name)))
        self.registered = True

    def add(self, written: WrittenFile, table: pa.Table, covers: list[str] | None = None) -> None:
        """A written part of scores to commit; `covers`: the documents parts holding its doc_ids (`corpusdb.covers`)."""
        self.uncommitted.add(written.path)
        info = {"size": written.size, "hash": written.hash, "rows": table.num_rows, "schema": schema_key(table.schema),
                SHARD: list(self.shard), **({COVERS: covers} if covers is not None else {})}
        self.pending.append((self.db.location.relpath(written.path), info, table.column("doc_id").to_numpy()))

    def commit(self) -> None:
        """Commit the parts written so far (documents another job scored meanwhile are dropped)."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        rewrites: list[str] = []

        def change(snapshot: Snapshot) -> str:
            if self.name not in snapshot.models:
                raise ConflictError(f"scores {self.name!r} were dropped by another job while this one ran; re-run the job")
            check_identity(self.name, snapshot.models[self.name], self.entry)
            parts = snapshot.tables[TABLE]
            others = [p for p, info in parts.items()
                      if p.startswith(prefix(self.name)) and p not in self.known and self._may_overlap(info)]
            taken = np.concatenate([self._doc_ids(p) for p in others]) if others else np.empty(0, dtype=np.int64)
            n_rows = 0
            for path, info, ids in batch:
                overlap = np.isin(ids, taken)
                if overlap.any():
                    path, info = self._rewrite(path, info, ~overlap)
                    if path is None:
                        continue
                    rewrites.append(path)
                parts[path] = info
                n_rows += info["rows"]
            unit = self.entry.get("unit") or "documents"
            total = sum(int(info.get("rows") or 0) for path, info in parts.items() if path.startswith(prefix(self.name)))
            return f"scores {self.name}: +{n_rows:,} {unit} ({total:,} in all)"

        committed = self.db.commit("score", change)
        live = set(committed.tables[TABLE])
        self.known |= {path for path, _, _ in batch} | set(rewrites)  # its own (not other jobs' parts: see above)
        for path in [p for p, _, _ in batch] + rewrites:
            if path not in live:  # replaced by a rewrite, or a rewrite of an attempt that lost the race
                self.db.location.remove(self.db.location.join(path))
        self.uncommitted = {p for p in self.uncommitted if self.db.location.relpath(p) not in live}

    def discard(self) -> None:
        """Remove the parts written and not committed (the job failed)."""
        for path in self.uncommitted:
            self.db.location.remove(path)
        self.uncommitted = set()

    def _may_overlap(self, info: dict) -> bool:
        """Whether a part another job committed may hold doc_ids this job scores: not where both record residues
        that no doc_id shares (the ranks and shards of one sharded job)."""
        if SHARD not in info:
            return True
        (mine, modulus), (theirs, other) = self.shard, info[SHARD]
        return (mine - theirs) % math.gcd(modulus, other) == 0

    def _doc_ids(self, path: str) -> np.ndarray:
        if path not in self._ids:
            full = self.db.location.join(path)
            self._ids[path] = pq.read_table(full, columns=["doc_id"], filesystem=self.db.location.fs).column("doc_id").to_numpy()
        return self._ids[path]

    def _rewrite(self, path: str, info: dict, keep: np.ndarray) -> tuple[str | None, dict | None]:
        if not keep.any():
            return None, None
        location = self.db.location
        table = pq.read_table(location.join(path), filesystem=location.fs).filter(pa.array(keep))
        written = location.write_parquet(table, "scores", f"model={self.name}", f"part-{uuid.uuid4().hex}.parquet")
        self.uncommitted.add(written.path)
        kept = {key: info[key] for key in (COVERS, SHARD) if key in info}  # fewer doc_ids: still true of them
        return location.relpath(written.path), {"size": written.size, "hash": written.hash, "rows": table.num_rows,
                                                "schema": schema_key(table.schema), **kept}
