"""Annotation names and their producers: registering, checking, listing and dropping.

    corpusdb annotations demo/db
    corpusdb annotations demo/db --drop language

Each annotation NAME is bound to its producer as a score name is to its model: the annotator's
kind (quality, language, python, import) and identity (its definitions' version and library
release, a model file's content hash, a Python module's source hash, an import's key and
columns) and the DuckDB types of its columns. Rows of another producer under the same name are
refused (`--replace` recomputes them all), so a policy never filters on two different
definitions of one column. Dropping a name removes its parts and its entry from the next version
(earlier versions keep them, for `--as-of`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from corpusdb.errors import CatalogError, ConflictError
from corpusdb.tables import ANNOTATIONS, annotation_columns, annotation_prefix, annotation_view, check_annotation_name, column_pairs
from corpusdb.versions import Snapshot

if TYPE_CHECKING:
    from corpusdb.db import Database


def new_entry(kind: str, producer: dict, columns: dict[str, str] | None) -> dict:
    """The version's record of an annotation: who makes its rows, and their columns (empty: known at the first part)."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {"kind": kind, "producer": producer, "columns": column_pairs(columns or {}), "created_at": now}


def check_producer(name: str, old: dict | None, entry: dict) -> None:
    """Refuse rows of another producer under a name that holds some already.

    Raises:
        CatalogError: naming what differs and the ways out.
    """
    if not old:
        return
    ways_out = (f"annotate under another NAME, drop the old one first (`corpusdb annotations DB --drop {name}`), "
                "or pass --replace to recompute every row")
    if old.get("kind") != entry.get("kind"):
        raise CatalogError(f"annotation {name!r} was made by the {old.get('kind')} annotator, not {entry.get('kind')}; {ways_out}")
    before, now = old.get("producer") or {}, entry.get("producer") or {}
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            raise CatalogError(f"annotation {name!r} was made with {key}={before.get(key)!r}, not {now.get(key)!r} "
                               f"(its rows would mix two definitions); {ways_out}")


def check_columns(name: str, old: dict[str, str], new: dict[str, str]) -> None:
    """Refuse parts whose columns differ from the annotation's (names or DuckDB types)."""
    if old and old != new:
        differ = sorted(set(old.items()) ^ set(new.items()))
        raise CatalogError(f"annotation {name!r} has columns {_describe(old)}, not {_describe(new)} (e.g. {differ[0][0]}); "
                           "return the same columns and types from every batch, or pass --replace")


def _describe(columns: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in columns.items())


def duckdb_columns(schema: pa.Schema | pa.Table) -> dict[str, str]:
    """{column: DuckDB type} of an Arrow schema (or a table's), as DuckDB reads the Parquet it becomes."""
    schema = schema.schema if isinstance(schema, pa.Table) else schema
    relation = duckdb.from_arrow(schema.empty_table())
    return {name: str(kind) for name, kind in zip(relation.columns, relation.types)}


def arrow_schema(columns: dict[str, str]) -> pa.Schema:
    """The Arrow schema DuckDB gives columns of these types."""
    if not columns:
        return pa.schema([])
    select = ", ".join(f"null::{kind} as {json.dumps(name)}" for name, kind in columns.items())
    return duckdb.sql(f"select {select}").to_arrow_table().schema


def register(db: Database, name: str, entry: dict, replace: bool) -> Snapshot:
    """Record `entry` under NAME (with `replace`, dropping NAME's parts first); returns the committed version.

    Raises:
        CatalogError: NAME holds rows of another producer (without `replace`).
    """
    def change(snapshot: Snapshot) -> str:
        old = snapshot.annotations.get(name)
        parts = snapshot.tables[ANNOTATIONS]
        mine = [p for p in parts if p.startswith(annotation_prefix(name))]
        if replace:
            for path in mine:
                del parts[path]
            snapshot.annotations[name] = entry
        elif not mine:  # no rows yet (a first job that failed early): nothing to mix, the new producer takes the name
            if not old or old.get("kind") != entry["kind"] or old.get("producer") != entry["producer"]:
                snapshot.annotations[name] = entry
        else:
            check_producer(name, old, entry)
        return f"annotation {name}" + (" replaced" if replace else "")

    return db.commit("annotate", change)


def claim(snapshot: Snapshot, name: str, entry: dict, columns: dict[str, str]) -> None:
    """Inside a job's commit: NAME must still be registered to this producer, with these columns (set on its first rows).

    Raises:
        ConflictError: another job dropped NAME meanwhile.
        CatalogError: another producer or other columns took NAME meanwhile.
    """
    old = snapshot.annotations.get(name)
    if old is None:
        raise ConflictError(f"annotation {name!r} was dropped by another job while this one ran; re-run the job")
    check_producer(name, old, entry)
    check_columns(name, annotation_columns(old), columns)
    if not old.get("columns"):
        snapshot.annotations[name] = {**old, "columns": column_pairs(columns)}


def list_annotations(db: Database) -> list[dict]:
    """Every annotation: its producer, columns, rows and the documents (of this version) it covers."""
    out = []
    for name, entry in sorted(db.snapshot.annotations.items()):
        parts = db.snapshot.parts(ANNOTATIONS, annotation_prefix(name))
        rows = db.snapshot.n_rows(ANNOTATIONS, annotation_prefix(name))
        (matched,) = db.con.execute(
            f"select count(*) from {annotation_view(name)} semi join documents using (doc_id)").fetchall()[0] if parts else (0,)
        out.append({
            "name": name, "view": annotation_view(name), "kind": entry.get("kind"),
            "producer": ", ".join(f"{k}={v}" for k, v in (entry.get("producer") or {}).items()),
            "columns": ", ".join(annotation_columns(entry)), "n_rows": rows, "n_documents": int(matched),
            "n_parts": len(parts), "created_at": entry.get("created_at"),
        })
    return out


def drop_annotation(db: Database, name: str) -> int:
    """Remove annotation NAME (its parts and entry) from the next version; returns the rows it held.

    Raises:
        ValueError: no such annotation.
    """
    check_annotation_name(name)
    db.writable()
    dropped: list[int] = []

    def change(snapshot: Snapshot) -> str:
        if name not in snapshot.annotations:
            known = ", ".join(sorted(snapshot.annotations)) or "none"
            raise ValueError(f"no annotation named {name!r} (annotations: {known}); `corpusdb annotations DB` lists them")
        parts = snapshot.tables[ANNOTATIONS]
        paths = [p for p in parts if p.startswith(annotation_prefix(name))]
        dropped.append(sum(int(parts.pop(p).get("rows") or 0) for p in paths))
        del snapshot.annotations[name]
        return f"annotation {name} dropped ({dropped[-1]:,} rows)"

    db.commit("annotations drop", change)
    return dropped[-1]
