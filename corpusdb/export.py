"""Exporting any view as a training subset: Parquet, JSONL or a flat token array, with a manifest written last.

    corpusdb export demo/db dedup out/dedup --format parquet
    corpusdb export demo/db "difference('teacher', 'reference')" s3://bkt/subset --format tokens --tokenizer out/student

Parts are numbered in view order (`part-00000.parquet`, ...), each written atomically; the
manifest (`manifest.json`: parts with row, byte and token counts, the view and its SQL, a hash of
the database's inputs) is written only after every part is in place. So a folder with a manifest
is a complete export, one without is not; re-running a killed export writes it again under the
same names and removes leftovers. Re-running a complete one with the same SQL and inputs does
nothing; anything else needs `overwrite`.

`tokens` writes, per part, `tokens-NNNNN.bin` (the documents' token ids, each followed by EOS,
little-endian uint16 when the vocabulary fits, else uint32: the layout training frameworks
memory-map) and `tokens-NNNNN.idx.parquet` (doc_id, offset, n_tokens per document).
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import time
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from tqdm.auto import tqdm

import corpusdb
from corpusdb import failpoint
from corpusdb.errors import ModelError
from corpusdb.storage import Location
from corpusdb.views import USER_VIEWS, relation_sql

if TYPE_CHECKING:
    from corpusdb.db import Database

FORMATS = ("parquet", "jsonl", "tokens")
MANIFEST = "manifest.json"


def inputs_hash(db: Database) -> str:
    """Hash of every table part (name and size) and saved view: changes whenever the data a view reads does."""
    from corpusdb.db import TABLE_FOLDERS

    items = []
    for folder, _ in TABLE_FOLDERS.values():
        items += [(posixpath.relpath(p, db.location.path), size) for p, size in db.location.file_sizes(folder).items()]
    items += [(posixpath.relpath(p, db.location.path), size) for p, size in db.location.file_sizes(USER_VIEWS).items()]
    return xxhash.xxh3_64_hexdigest(json.dumps(sorted(items)).encode())


def load_tokenizer(name: str):
    """A tokenizer by folder or hub id that has an EOS token (it ends every exported document).

    Raises:
        ModelError: it cannot be loaded or has no EOS token.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelError(f"tokenizer {name!r} cannot be loaded ({str(exc).strip().splitlines()[0]}); pass a folder or hub id with a tokenizer") from exc
    if tokenizer.eos_token_id is None:
        raise ModelError(f"tokenizer {name!r} has no EOS token to separate documents; set one with tokenizer.eos_token")
    return tokenizer


class _PartSink:
    """Writes buffered record batches as numbered parts in one format."""

    def __init__(self, out: Location, fmt: str, tokenizer=None):
        self.out, self.fmt, self.tokenizer = out, fmt, tokenizer
        self.parts: list[dict] = []
        if tokenizer is not None:
            self.dtype = np.uint16 if len(tokenizer) <= 65536 else np.uint32

    def write(self, batches: list[pa.RecordBatch]) -> None:
        table = pa.Table.from_batches(batches)
        index = len(self.parts)
        entry = {"rows": table.num_rows, "bytes": int(pc.sum(table.column("n_bytes")).as_py() or 0)}
        if self.fmt == "parquet":
            entry["file"] = f"part-{index:05d}.parquet"
            self.out.write_parquet(table, entry["file"])
        elif self.fmt == "jsonl":
            lines = b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist())
            entry["file"] = f"part-{index:05d}.jsonl"
            self.out.write_atomic(lines, entry["file"])
        else:
            eos = self.tokenizer.eos_token_id
            encoded = self.tokenizer(table.column("text").to_pylist(), add_special_tokens=False, verbose=False)["input_ids"]
            lengths = np.array([len(ids) + 1 for ids in encoded], dtype=np.int64)
            flat = np.fromiter((t for ids in encoded for t in (*ids, eos)), dtype=self.dtype, count=int(lengths.sum()))
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            entry["file"] = f"tokens-{index:05d}.bin"
            entry["index"] = f"tokens-{index:05d}.idx.parquet"
            entry["tokens"] = int(lengths.sum())
            self.out.write_atomic(flat.astype(np.dtype(self.dtype).newbyteorder("<")).tobytes(), entry["file"])
            self.out.write_parquet(pa.table({"doc_id": table.column("doc_id"), "offset": offsets, "n_tokens": lengths}),
                                   entry["index"])
        self.parts.append(entry)
        failpoint.after_part("export", len(self.parts))


def export_view(
    db: Database,
    view: str,
    url: str,
    *,
    format: str = "parquet",  # noqa: A002 - the CLI option's name
    part_size_mb: float = 256.0,
    tokenizer: str | None = None,
    storage_options: dict | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    digest: str | None = None,
) -> dict:
    """Export the rows of VIEW (a view name, macro call or select) to URL; returns the manifest.

    Args:
        format: parquet (all columns), jsonl (all columns) or tokens (needs `tokenizer`).
        part_size_mb: text bytes per part.
        tokenizer: for tokens: a folder or hub id with a tokenizer that has an EOS token.
        storage_options: fsspec options for URL (default: the database's).
        overwrite: replace an export of something else that is already at URL.
        digest: `inputs_hash(db)` where the caller has just computed it (it lists every part).

    Raises:
        ValueError: bad format or size, or URL holds another export and overwrite is False.
        QueryError: VIEW does not run.
        ModelError: the tokenizer cannot be loaded.
    """
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if part_size_mb <= 0:
        raise ValueError(f"part_size_mb {part_size_mb} must be positive")
    if format == "tokens" and not tokenizer:
        raise ValueError("format tokens needs a tokenizer (--tokenizer PATH_OR_HUB_ID)")
    started = time.perf_counter()
    sql = relation_sql(db, view)
    columns = db.sql(f"select * from ({sql}) limit 0").columns
    for needed in ("doc_id", "text", "n_bytes"):
        if needed not in columns:
            raise ValueError(f"{view!r} has no {needed!r} column; export needs rows of documents (doc_id, text, n_bytes)")
    out = Location(url, db.location.storage_options if storage_options is None else storage_options)
    digest = digest or inputs_hash(db)
    if out.exists(MANIFEST):
        old = json.loads(out.read_bytes(MANIFEST))
        same = old.get("sql") == sql and old.get("inputs_hash") == digest and old.get("format") == format \
            and old.get("tokenizer") == tokenizer
        if same and not overwrite:
            return old
        if not overwrite:
            raise ValueError(f"{url} already holds an export of {old.get('view')!r}; pass --overwrite to replace it")
        out.remove(out.join(MANIFEST))  # from here on the folder is incomplete until the new manifest
    if out.is_local:
        out.fs.makedirs(out.path, exist_ok=True)
    sink = _PartSink(out, format, load_tokenizer(tokenizer) if tokenizer else None)
    limit = int(part_size_mb * 1024 * 1024)
    cursor = db.con.cursor()
    try:
        reader = cursor.sql(sql).to_arrow_reader(4096)
        held: list[pa.RecordBatch] = []
        held_bytes = 0
        with tqdm(unit="doc", desc=f"export {view}", disable=(not progress) if progress is not None else None,
                  dynamic_ncols=True) as bar:
            for batch in reader:
                bar.update(batch.num_rows)
                while batch.num_rows:
                    # cut the batch where the part reaches its size, so parts are about part_size_mb
                    running = held_bytes + np.cumsum(batch.column("n_bytes").to_numpy(zero_copy_only=False))
                    cut = int(np.searchsorted(running, limit, side="left")) + 1
                    if cut > batch.num_rows:
                        held.append(batch)
                        held_bytes = int(running[-1])
                        break
                    held.append(batch.slice(0, cut))
                    sink.write(held)
                    held, held_bytes = [], 0
                    batch = batch.slice(cut)
            if held or not sink.parts:
                sink.write(held or [pa.RecordBatch.from_pylist([], schema=reader.schema)])
    finally:
        cursor.close()
    written = {p["file"] for p in sink.parts} | {p["index"] for p in sink.parts if "index" in p}
    for path in out.list_files(""):
        name = posixpath.relpath(path, out.path)
        if name != MANIFEST and name not in written and (name.startswith(("part-", "tokens-"))):
            out.remove(path)
    manifest = {
        "format": format,
        "view": view,
        "sql": sql,
        "columns": columns,
        "inputs_hash": digest,
        "database": db.url,
        "parts": sink.parts,
        "n_rows": sum(p["rows"] for p in sink.parts),
        "n_bytes": sum(p["bytes"] for p in sink.parts),
        "tokenizer": tokenizer,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "corpusdb": corpusdb.__version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if format == "tokens":
        manifest.update(
            n_tokens=sum(p["tokens"] for p in sink.parts), dtype=np.dtype(sink.dtype).name,
            eos_token_id=sink.tokenizer.eos_token_id, vocab_size=len(sink.tokenizer),
        )
    out.write_atomic(json.dumps(manifest, indent=1).encode(), MANIFEST)
    return manifest
