"""Which documents parts a score part's doc_ids lie in: what lets a task of a distributed selection read only its scores.

    python -c "import corpusdb; db = corpusdb.open('demo/db'); print({p: i.get('covers') for p, i in db.snapshot.tables['scores'].items()})"

doc_ids are content hashes, so neither a score part's name nor its row-group statistics say which
documents it scores; without more, every task of `corpusdb select` reads every score row of the
database (T tasks: T times the scores). A score part's record may carry `covers`: the documents
parts (paths relative to the database) that hold every one of its doc_ids. The scoring job writes
it (it reads the documents part by part, in order: a part of scores covers the few documents parts
its documents came from), and `register_parts("scores", ..., covers=)` takes it after checking it.

A task over some documents parts then reads the score parts that cover one of them, and every score
part whose record has no `covers` or names a documents part the version no longer holds (a part
rewritten or dropped since, whose documents may now lie elsewhere): those stay read by every task,
so the rows a task sees are the rows of its doc_ids, whatever the history. A documents part holds
each doc_id once in the database (ingest and `register_parts` refuse repeats), so a score row of a
task's document lies in a part that covers that document's part.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from corpusdb.versions import Snapshot

FIELD = "covers"


def task_parts(snapshot: Snapshot, documents: set[str]) -> list[str]:
    """The score parts (relative paths, sorted) a reader of the documents parts `documents` (relative paths of
    live documents parts) must read: those covering one of them, and those whose cover is unknown or stale."""
    live = snapshot.tables.get("documents", {})
    found = []
    for path, info in sorted(snapshot.tables.get("scores", {}).items()):
        covers = info.get(FIELD)
        if covers is None or not documents.isdisjoint(covers) or any(part not in live for part in covers):
            found.append(path)
    return found


def check(snapshot: Snapshot, covers: dict[str, list[str]], score_ids: Callable[[str], np.ndarray],
          document_ids: Callable[[str], np.ndarray]) -> None:
    """Raise ValueError unless every doc_id of each score part in `covers` lies in one of the documents parts it
    names, each a live documents part of `snapshot` (paths relative to the database)."""
    live = snapshot.tables.get("documents", {})
    for path, parts in covers.items():
        stray = [part for part in parts if part not in live]
        if stray:
            raise ValueError(f"register_parts: covers of {path} names {stray[0]}, which is not a documents part of this "
                             "version; name the documents parts that hold its doc_ids (register them first)")
        held = np.concatenate([document_ids(part) for part in parts]) if parts else np.empty(0, dtype=np.int64)
        ids = score_ids(path)
        outside = ids[~np.isin(ids, held)]
        if len(outside):
            raise ValueError(
                f"register_parts: {len(outside):,} doc_id(s) of {path} are in none of the documents parts its covers "
                f"names (e.g. {int(outside[0])}); name every documents part that holds its doc_ids, or leave the part "
                "out of covers (every task of a distributed selection then reads it)")
