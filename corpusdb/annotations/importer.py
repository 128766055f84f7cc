"""Importing an annotation computed elsewhere: Parquet or JSON lines keyed by doc_id, or by the text itself.

    corpusdb annotate demo/db edu --from s3://bkt/classifier-scores/ --key doc_id
    corpusdb annotate demo/db edu --from scores.jsonl.gz --key text --columns edu_score

Every input file becomes one part `annotations/NAME/import-<key>-<id>.parquet` of doc_id and the
chosen columns. The key is a `doc_id` column (signed 64-bit, or the unsigned xxh3-64 value, which
is the same hash) or a text column, hashed to its doc_id exactly as ingest does (normalised
text). The text itself is not stored. The import commits once, at the end: a failure leaves
nothing behind, and a re-run skips the files it imported before. An annotation has one row per
document, so a doc_id twice (in a file, or already imported from another file) is an error.
Rows whose doc_id matches no document are kept (they join nothing) and counted in the report.
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import xxhash
from tqdm.auto import tqdm

from corpusdb.annotations.annotators import COLUMN_RE
from corpusdb.annotations.job import AnnotateReport, conform
from corpusdb.annotations.registry import claim, duckdb_columns, new_entry, register
from corpusdb.db import Database
from corpusdb.errors import InputError
from corpusdb.ingest.sources import InputFile, list_inputs
from corpusdb.storage import resolve, storage_errors
from corpusdb.tables import ANNOTATIONS, annotation_columns, annotation_prefix, check_annotation_name
from corpusdb.text import doc_id, normalize
from corpusdb.versions import Snapshot

KEYS = ("doc_id", "text")


def read_input(item: InputFile, storage_options: dict) -> pa.Table:
    """The rows of one Parquet or JSON-lines file (compressed or not).

    Raises:
        InputError: not valid Parquet or JSON lines, or another format.
    """
    fs, _ = resolve(item.url, storage_options)
    with storage_errors(item.url, fs):
        if item.format == "parquet":
            with fs.open(item.path, "rb") as f:
                try:
                    return pq.read_table(f)
                except pa.ArrowInvalid as exc:
                    raise InputError(f"{item.url}: not a readable Parquet file ({exc}); re-export it") from exc
        if item.format != "jsonl":
            raise InputError(f"{item.url}: an import reads Parquet or JSON lines, not {item.format}; convert it, or pass --format")
        with fs.open(item.path, "rb", compression=item.compression) as f:
            data = f.read()
    try:
        return pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=max(1 << 20, min(len(data), 1 << 28))))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{item.url}: not valid JSON lines ({exc}); one JSON object per line") from exc


def key_of(table: pa.Table, key: str | None, url: str) -> str:
    """The key column: `key`, else doc_id where there is one, else text."""
    if key is not None:
        if key not in table.column_names:
            raise InputError(f"{url} has no column {key!r} to match documents by; columns: {', '.join(table.column_names)}")
        return key
    for name in KEYS:
        if name in table.column_names:
            return name
    raise InputError(f"{url} has neither a doc_id nor a text column to match documents by; pass --key COLUMN "
                     f"(columns: {', '.join(table.column_names)})")


def doc_ids_of(column: pa.ChunkedArray, key: str, url: str) -> np.ndarray:
    """Signed 64-bit doc_ids from a doc_id column (signed or unsigned integers) or from texts."""
    if pa.types.is_integer(column.type):
        if column.null_count:
            raise InputError(f"{url}: {column.null_count} rows have no {key}; every row needs its document's {key}")
        if pa.types.is_unsigned_integer(column.type):
            return column.to_numpy().astype(np.uint64).view(np.int64)  # the unsigned xxh3 value is the same hash
        return column.to_numpy().astype(np.int64)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        values = column.to_pylist()
        if any(v is None for v in values):
            raise InputError(f"{url}: {sum(v is None for v in values)} rows have no {key}; every row needs its document's text")
        if key == "doc_id":
            raise InputError(f"{url}: doc_id holds text, not integers; pass --key text to hash texts, or write doc_id as integers")
        return np.fromiter((doc_id(normalize(v)) for v in values), dtype=np.int64, count=len(values))
    raise InputError(f"{url}: key column {key!r} is {column.type}; it must be integer doc_ids or texts")


def run_import(db: Database, name: str, sources: list[str], *, key: str | None = None, columns: list[str] | None = None,
               fmt: str = "auto", replace: bool = False, progress: bool | None = None,
               storage_options: dict | None = None) -> AnnotateReport:
    """Import annotation NAME from SOURCES (files, folders, globs; any fsspec URL) in one commit.

    Args:
        key: the column matching rows to documents: doc_id, or a text column (hashed as ingest does)
            [default: doc_id if the input has it, else text].
        columns: the columns to import [default: all but the key and any text column].
        replace: drop NAME's rows first (another producer, other columns, or a new import of the same documents).

    Raises:
        InputError: unreadable input, no key, duplicate doc_ids, bad column names.
        CatalogError: NAME holds another annotator's rows or other columns (without `replace`).
    """
    started = time.perf_counter()
    check_annotation_name(name)
    if fmt not in ("auto", "jsonl", "parquet"):
        raise ValueError(f"an import reads auto, jsonl or parquet, not {fmt!r}")
    db.writable()
    db.refresh()
    options = db.location.storage_options if storage_options is None else storage_options
    files, skipped = list_inputs(sources, fmt, options)
    files = [f for f in files if f.format in ("jsonl", "parquet")] if fmt == "auto" else files
    if not files:
        raise InputError(f"no Parquet or JSON-lines files in {', '.join(sources)}" + (f" (skipped {', '.join(skipped[:3])})" if skipped else ""))
    first = read_input(files[0], options)
    key = key_of(first, key, files[0].url)
    chosen = columns or [c for c in first.column_names if c != key and c != "text"]
    producer = {"key": "doc_id" if key == "doc_id" else f"text of {key}", "columns": sorted(chosen)}
    entry = new_entry("import", producer, None)
    committed = register(db, name, entry, replace)
    known_columns = annotation_columns(committed.annotations[name])
    prefix = annotation_prefix(name)
    done_inputs = {info.get("input") for path, info in committed.tables[ANNOTATIONS].items() if path.startswith(prefix)}
    report = AnnotateReport(name=name, kind="import", n_parts=len(files))
    location = db.location
    written: dict[str, dict] = {}
    ids_written: dict[str, np.ndarray] = {}
    try:
        with tqdm(total=len(files), unit="file", desc=f"import {name}", disable=(not progress) if progress is not None else None,
                  dynamic_ncols=True) as bar:
            for item in files:
                input_key = xxhash.xxh3_64_hexdigest(json.dumps([item.url, item.size, item.version, producer]).encode())
                if input_key in done_inputs:
                    report.n_parts_done_before += 1
                    bar.update(1)
                    continue
                table = first if item is files[0] else read_input(item, options)
                part = _annotation_rows(table, key_of(table, key, item.url), chosen, item.url)
                if not known_columns:
                    known_columns = duckdb_columns(part.drop_columns(["doc_id"]))
                part = conform(part, known_columns, name)  # e.g. JSON integers in one file, decimals in the next
                out = location.write_parquet(part, prefix.rstrip("/"), f"import-{input_key}-{uuid.uuid4().hex[:8]}.parquet")
                path = location.relpath(out.path)
                written[path] = {"size": out.size, "hash": out.hash, "rows": part.num_rows, "input": input_key,
                                 "source": item.url}
                ids_written[path] = part.column("doc_id").to_numpy()
                report.n_parts_annotated += 1
                report.n_documents += part.num_rows
                bar.update(1)
        _check_unique(ids_written)
        report.n_unmatched = _unmatched(db, np.concatenate(list(ids_written.values()))) if ids_written else 0

        def change(snapshot: Snapshot) -> str:
            claim(snapshot, name, entry, known_columns)
            parts = snapshot.tables[ANNOTATIONS]
            theirs = [p for p in parts if p.startswith(prefix)]
            if theirs and ids_written:
                before = np.concatenate([_doc_ids(db, p) for p in theirs])
                mine = np.concatenate(list(ids_written.values()))
                overlap = np.intersect1d(before, mine)
                if len(overlap):
                    raise InputError(f"{len(overlap):,} doc_ids of this import are annotated under {name!r} already, by "
                                     f"another input (e.g. doc_id {int(overlap[0])}); an annotation has one row per "
                                     "document: pass --replace to import these files instead of the old ones")
            parts.update(written)
            return f"annotation {name}: {report.n_documents:,} rows imported from {report.n_parts_annotated} files"

        if written:
            db.commit("annotate", change)
    except BaseException:
        for path in written:
            location.remove(location.join(path))
        raise
    report.columns = known_columns
    report.version = db.version
    report.seconds = time.perf_counter() - started
    return report


def _annotation_rows(table: pa.Table, key: str, chosen: list[str], url: str) -> pa.Table:
    missing = [c for c in chosen if c not in table.column_names]
    if missing:
        raise InputError(f"{url} has no column {missing[0]!r}; columns: {', '.join(table.column_names)}")
    if not chosen:
        raise InputError(f"{url} has no column to import besides its key {key!r}; pass --columns")
    for name in chosen:
        if name == "doc_id" or not COLUMN_RE.match(name):
            raise InputError(f"{url}: column {name!r} cannot be imported (doc_id is the key; names are letters, digits "
                             "and '_'); choose others with --columns")
    ids = doc_ids_of(table.column(key), key, url)
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        twice = values[counts > 1]
        raise InputError(f"{url}: {len(twice):,} documents have more than one row (e.g. doc_id {int(twice[0])}); "
                         "an annotation has one row per document: deduplicate the input")
    return pa.Table.from_arrays([pa.array(ids, pa.int64()), *[table.column(c) for c in chosen]], names=["doc_id", *chosen])


def _check_unique(ids_written: dict[str, np.ndarray]) -> None:
    if len(ids_written) < 2:
        return
    everything = np.concatenate(list(ids_written.values()))
    values, counts = np.unique(everything, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{int((counts > 1).sum()):,} documents have rows in more than one input file (e.g. doc_id "
                         f"{int(values[counts > 1][0])}); an annotation has one row per document: deduplicate the inputs")


def _unmatched(db: Database, ids: np.ndarray) -> int:
    """Rows whose doc_id is not a document of the database."""
    con = db.con.cursor()
    try:
        con.register("imported_ids", pa.table({"doc_id": pa.array(ids, pa.int64())}))
        return int(con.execute("select count(*) from imported_ids anti join documents using (doc_id)").fetchall()[0][0])
    finally:
        con.close()


def _doc_ids(db: Database, path: str) -> np.ndarray:
    return pq.read_table(db.location.join(path), columns=["doc_id"], filesystem=db.location.fs).column("doc_id").to_numpy()

