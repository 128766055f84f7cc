"""Which documents parts a score part's doc_ids lie in: what lets a task of a distributed selection read only its scores.

    python -c "import corpusdb; db = corpusdb.open('demo/db'); print({p: i.get('covers') for p, i in db.snapshot.tables['scores'].items()})"

doc_ids are content hashes, so neither a score part's name nor its row-group statistics say which
documents it scores; without more, every task of `corpusdb select` reads every score row of the
database (T tasks: T times the scores). A score part's record may carry `covers`: the documents
parts (paths relative to the database) that hold every one of its doc_ids. The scoring job writes
it (it reads the documents part by part, in order, a --view's documents too: a part of scores covers
the few documents parts its documents came from), and `register_parts("scores", ..., covers=)` takes it after checking it.

`corpusdb models DB --covers` (`record`) finds them for the parts that have none (scores from before
covers existed, registered without, or stale) with one join of their doc_ids to the documents'.

Over instances (`docs := 'instances'`) the same holds for the parts of `instance_spans` (their
doc_id is their document's: `corpusdb instances` writes a part's covers as it reads the documents
in order) and for scores of instances (keyed by instance_id: covered by the documents parts of
their spans' documents; the scoring job records them, `record` finds them through the spans).

Annotation parts name the one documents part they annotate (`of`: the annotate and decontaminate jobs write a part
per documents part); an imported annotation's part (`corpusdb annotate DB NAME --from URL`) holds the rows of an input
file, of any documents: `record` gives those covers too.

A task over some documents parts then reads the score parts that cover one of them, and every score
part whose record has no `covers` or names a documents part the version no longer holds (a part
rewritten or dropped since, whose documents may now lie elsewhere): those stay read by every task,
so the rows a task sees are the rows of its doc_ids, whatever the history. A documents part holds
each doc_id once in the database (ingest and `register_parts` refuse repeats), so a score row of a
task's document lies in a part that covers that document's part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from corpusdb.statements import quote
from corpusdb.versions import Snapshot

FIELD = "covers"


TABLES = ("scores", "instance_spans", "annotations")  # the tables whose parts may record covers


def instance_models(snapshot: Snapshot) -> list[str]:
    """Score names whose scores are of instances, keyed by instance_id (sorted): their covers go through the instances'
    spans, and they go stale when instances are cut again."""
    return sorted(name for name, entry in snapshot.models.items() if entry.get("unit") == "instances")


def of_instances(path: str, models: Iterable[str]) -> bool:
    """Whether the part of scores at `path` holds scores of instances."""
    return any(path.startswith(f"scores/model={m}/") for m in models)


def _known(snapshot: Snapshot, info: dict) -> bool:
    """Whether a score part's record says which live documents parts hold its doc_ids."""
    covers = info.get(FIELD)
    live = snapshot.tables.get("documents", {})
    return covers is not None and all(part in live for part in covers)


def all_known(snapshot: Snapshot, table: str, prefix: str = "") -> bool:
    """Whether every part of `table` under `prefix` records which live documents parts hold its keys."""
    return all(_known(snapshot, info) for path, info in snapshot.tables.get(table, {}).items() if path.startswith(prefix))


def task_parts(snapshot: Snapshot, documents: set[str], table: str = "scores", prefix: str = "") -> list[str]:
    """The parts of `table` (relative paths under `prefix`, sorted) a reader of the documents parts `documents`
    (relative paths of live documents parts) must read: those covering one of them, and those whose cover is unknown
    or stale (an annotation part that names the live documents part it annotates, `of`, covers that one)."""
    return runs_parts(snapshot, [documents], table, prefix)[0]


def runs_parts(snapshot: Snapshot, runs: list[set[str]], table: str = "scores", prefix: str = "") -> list[list[str]]:
    """`task_parts` of each run of documents parts in `runs`, in one pass over the parts of `table`: the cost follows
    the parts and their covers, not the runs times the parts."""
    live = snapshot.tables.get("documents", {})
    runs_of: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        for part in run:
            runs_of.setdefault(part, []).append(index)
    read: list[list[str]] = [[] for _ in runs]
    for path, info in sorted(snapshot.tables.get(table, {}).items()):
        if not path.startswith(prefix):
            continue
        if info.get("of") in live:
            hit = runs_of.get(info["of"], [])
        elif not _known(snapshot, info):
            hit = range(len(runs))
        else:
            hit = sorted({index for part in info[FIELD] for index in runs_of.get(part, ())})
        for index in hit:
            read[index].append(path)
    return read


def record(db) -> int:
    """Record in `db` (a `corpusdb.Database`) the covers of every part of scores, of instance spans and of annotations
    whose record has none (or a stale one; an annotation part that names its live documents part needs none), from one
    join of their keys to the documents parts' (DuckDB, under the database's
    memory limit; scores of instances through the spans, instance_id to doc_id), in a new version. A key that no
    documents part holds (a document since dropped) is in no cover: no task's documents hold it either. Returns the
    parts given covers.
    """
    snapshot = db.snapshot
    instances = instance_models(snapshot)
    live = snapshot.tables.get("documents", {})
    todo = {table: [path for path, info in sorted(snapshot.tables.get(table, {}).items())
                    if not _known(snapshot, info) and info.get("of") not in live] for table in TABLES}
    documents = snapshot.parts("documents")
    if not any(todo.values()):
        return 0
    url = lambda p: db.location.url_of(db.location.join(p))  # noqa: E731
    urls = {url(p): p for p in [*todo["scores"], *todo["instance_spans"], *todo["annotations"], *documents]}
    listing = lambda paths: ", ".join(quote(url(p)) for p in paths)  # noqa: E731
    found: dict[str, set[str]] = {path: set() for paths in todo.values() for path in paths}
    if documents:
        parts = (f"(select doc_id, filename from read_parquet([{listing(documents)}], filename = true, "
                 "union_by_name = true))")
        by_doc = [p for p in todo["scores"] if not of_instances(p, instances)] + todo["instance_spans"] + todo["annotations"]
        by_instance = [p for p in todo["scores"] if of_instances(p, instances)]
        joins = []
        if by_doc:
            joins.append(f"select distinct s.filename as part, d.filename as documents from read_parquet([{listing(by_doc)}], "
                         f"filename = true, union_by_name = true) as s join {parts} as d using (doc_id)")
        if by_instance:  # an instance's score: its span's document
            joins.append(f"select distinct s.filename as part, d.filename as documents from read_parquet("
                         f"[{listing(by_instance)}], filename = true) as s join instance_spans as i on s.doc_id = "
                         f"i.instance_id join {parts} as d on i.doc_id = d.doc_id")
        unsure = set()
        for part, holder in db.con.execute(" union all ".join(joins)).fetchall():
            if part in urls and holder in urls:
                found[urls[part]].add(urls[holder])
            else:  # a name DuckDB spelled otherwise: that part keeps no cover rather than a wrong one
                unsure.add(urls.get(part, part))
        found = {path: parts for path, parts in found.items() if path not in unsure}
    given: list[str] = []

    def change(latest: Snapshot) -> str:
        live = latest.tables.get("documents", {})
        given.clear()
        for table in TABLES:
            records = latest.tables.get(table, {})
            for path, parts in found.items():
                # a part rewritten meanwhile is another path; a documents part dropped meanwhile voids this cover
                if path in records and not _known(latest, records[path]) and all(part in live for part in parts):
                    records[path] = {**records[path], FIELD: sorted(parts)}
                    given.append(path)
        return f"covers recorded for {len(given)} part(s) of scores, instances and annotations"

    if found:
        db.commit("covers", change)
    return len(given)


def check(snapshot: Snapshot, covers: dict[str, list[str]], score_ids: Callable[[str], np.ndarray],
          document_ids: Callable[[str], np.ndarray]) -> None:
    """Raise ValueError unless every doc_id of each part in `covers` (of document scores or instance spans) lies in
    one of the documents parts it names, each a live documents part of `snapshot` (paths relative to the
    database)."""
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
