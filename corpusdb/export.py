"""Exporting any view as a training subset (Parquet, JSONL, token arrays, MDS, LitData), with a manifest written last.

    corpusdb export demo/db dedup out/dedup --format parquet
    corpusdb export demo/db "difference('teacher', 'reference')" s3://bkt/subset --format tokens --tokenizer out/student

Parts are numbered in row order (`part-00000-<key>.parquet`, ...), each written atomically; the
manifest (`manifest.json`: the parts with row, byte and token counts, and the selection's
provenance: database version, SQL with every view and policy it reads, model identities,
`inputs_hash`) is written only after every part is in place. Rows come in the view's own order
where it has one (curricula); a view that hands out documents' or instances' text unchanged (every
built-in policy, `corpusdb.cut`) comes in *place* order, the order of its rows in the committed
documents parts: DuckDB sorts its other columns by place and the text is read from the parts a
batch at a time, so no text is sorted or held; any other view comes by doc_id (an instance view:
by doc_id, then byte_start). So an export is byte-identical run to run.

An export never deletes or overwrites a file it did not write. Before its first part it records
the files it will write in `.corpusdb-export.json` (the journal); a folder holding anything else
is refused. So a folder with a manifest is a complete export and one with only a journal an
unfinished one, which the same command completes. A complete export of the same key (provenance,
format, tokenizer, part size) is left alone; another one at the URL needs `overwrite`, and is
replaced only once the new manifest is in place: a failed export leaves the folder as it found it.

`megatron` writes, per part, the indexed dataset Megatron-LM, NeMo and MiniPLM's trainer read:
`megatron-NNNNN-<key>.bin` (the same token ids, each row followed by EOS, uint16 or int32) and
`megatron-NNNNN-<key>.idx` (header `MMIDIDX`, version 1, dtype code, sequence lengths, byte
pointers and document indices; each row is one sequence and one document); pass the parts'
prefixes (`prefix` in the manifest) as Megatron's `--data-path`.

`datatrove` writes, per part, datatrove's tokenized files (nanotron's `DatatroveFolderDataset`
reads a folder of them): `datatrove-NNNNN-<key>.ds` (token ids, each document followed by EOS,
uint16 or uint32), `.ds.index` (document ends in tokens, uint64) and `.ds.metadata`.

`mds` writes MosaicML streaming's shards, `mds-NNNNN-<key>.mds`, cut at `part_size_mb` of encoded
bytes as `streaming.MDSWriter` cuts them (the same bytes; `corpusdb/mds.py`), and `index.json`;
`litdata` writes LitData's chunks, `litdata-NNNNN-<key>.bin`, through LitData's own writer
(`corpusdb/litdata_sink.py`), and `index.json`. Both take an optional tokenizer (a `tokens` column).

`tokens` writes, per part, `tokens-NNNNN-<key>.bin` (the documents' token ids, each followed by
EOS, little-endian uint16 when the vocabulary fits, else uint32: the layout training frameworks
memory-map) and `tokens-NNNNN-<key>.idx.parquet` (doc_id, instance_id for instances, offset, and
n_tokens per row, its EOS included).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import posixpath
import re
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from tqdm.auto import tqdm

from corpusdb import failpoint, mds
from corpusdb.cut import placed_batches, text_kind
from corpusdb.errors import ExportError
from corpusdb.export_base import JOURNAL, claim, slices, tokenize
from corpusdb.provenance import is_ordered, missing_choices, provenance
from corpusdb.release import VERSION
from corpusdb.storage import Location, WriteQueue, temporary_of
from corpusdb.views import relation_sql

if TYPE_CHECKING:
    from corpusdb.db import Database

FORMATS = ("parquet", "jsonl", "tokens", "megatron", "datatrove", "mds", "litdata")
TOKENIZED = ("tokens", "megatron", "datatrove")  # need a tokenizer (mds and litdata take one: a `tokens` column)
STREAMING = ("mds", "litdata")  # cut into shards or chunks by their encoded size, listed in index.json
MEGATRON_HEADER = b"MMIDIDX\x00\x00"  # Megatron-LM's indexed dataset (.idx), version 1
MEGATRON_DTYPES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}  # megatron.core.datasets.indexed_dataset.DType
MANIFEST = "manifest.json"
CARD = "README.md"  # a Hugging Face dataset card naming the parts (parquet and jsonl exports)
DATASET_INDEX = "index.json"  # the shards (mds) or chunks (litdata) in order, as their readers want
MDS_MAX_PART_MB = 2048.0  # an MDS shard addresses its samples with uint32 offsets
ROW_GROUP_ROWS, ROW_GROUP_BYTES = 65536, 32 * 1024 * 1024  # a Parquet part's row groups: rows, or bytes of text
LOCK = ".corpusdb-export.lock"  # held by the export writing into the folder (ExportLock)
FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_file_name(url: str, name: object) -> str:
    """`name` if it names a file inside the export folder itself (no path, no `..`).

    Raises:
        ExportError: a manifest or journal names something outside its folder.
    """
    if not isinstance(name, str) or not FILE_NAME.match(name) or ".." in name:
        raise ExportError(f"{url}: the manifest names {name!r}, which is not a file of its own folder; "
                          "a corpusdb export only names files next to its manifest (re-export it)")
    return name


def load_tokenizer(name: str):
    """A tokenizer (folder, .gguf file or hub id) with an EOS token, which ends every exported document."""
    from corpusdb.scoring.model import load_tokenizer as load

    return load(name, need_eos=True)


class _PartSink:
    """Streams record batches into numbered parts in one format, each file recorded in the journal first.

    A part is open from its first batch (`add`) to `finish`: its files are written as the batches
    come (Parquet row groups, JSON lines, token ids) and published atomically at the end, so memory
    holds a batch and a row group, never a whole part.
    """

    def __init__(self, out: Location, fmt: str, key: str, journal: dict, tokenizer=None, part_bytes: int = 0):
        self.out, self.fmt, self.key, self.journal, self.tokenizer = out, fmt, key, journal, tokenizer
        self.part_bytes = part_bytes
        self.parts: list[dict] = []
        self.shards: list[dict] = []  # mds: each part's entry in index.json
        self._stack: contextlib.ExitStack | None = None
        if tokenizer is not None:
            # Megatron-LM reads uint16 or int32 token ids (no uint32)
            self.dtype = np.uint16 if len(tokenizer) <= 65536 else (np.int32 if fmt == "megatron" else np.uint32)

    def _claim(self, *names: str) -> None:
        claim(self.out, self.journal, *names)

    def _open(self, schema: pa.Schema) -> None:
        index = len(self.parts)
        entry = self._entry = {"rows": 0, "bytes": 0}
        self._stack = contextlib.ExitStack()
        if self.fmt == "parquet":
            entry["file"] = f"part-{index:05d}-{self.key}.parquet"
            self._claim(entry["file"])
            self._file = self._stack.enter_context(self.out.open_atomic(entry["file"]))
            self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")
            self._group: list[pa.RecordBatch] = []
            self._group_rows = self._group_bytes = 0
            return
        if self.fmt == "mds":  # the samples wait in a local file: the shard's header comes first and counts them
            entry["file"] = f"mds-{index:05d}-{self.key}.mds"
            self._claim(entry["file"])
            self._columns = mds.encodings(schema, self.dtype if self.tokenizer is not None else None)
            self._config = mds.shard_config(self._columns, self.part_bytes)
            self._shard_bytes = 8 + len(self._config)  # what MDSWriter counts against its size limit
            self._samples = self._stack.enter_context(tempfile.TemporaryFile())
            self._sizes: list[int] = []
            self._lengths = []
            return
        if self.fmt == "jsonl":
            entry["file"] = f"part-{index:05d}-{self.key}.jsonl"
            self._claim(entry["file"])
        else:
            prefix = f"{self.fmt}-{index:05d}-{self.key}"
            names = {"tokens": (f"{prefix}.bin", f"{prefix}.idx.parquet"), "megatron": (f"{prefix}.bin", f"{prefix}.idx"),
                     "datatrove": (f"{prefix}.ds", f"{prefix}.ds.index", f"{prefix}.ds.metadata")}[self.fmt]
            entry.update(zip(("file", "index", "metadata"), names))
            if self.fmt != "tokens":
                entry["prefix"] = prefix
            self._claim(*names)
            self._lengths: list[np.ndarray] = []
            self._keys: dict[str, list[pa.Array]] = {name: [] for name in ("doc_id", "instance_id") if name in schema.names}
        self._file = self._stack.enter_context(self.out.open_atomic(entry["file"]))

    @property
    def open(self) -> bool:
        """Whether a part is open (it has had a batch and is not finished)."""
        return self._stack is not None

    def add(self, batch: pa.RecordBatch) -> None:
        """Append rows to the open part (opening the next one first)."""
        if self.fmt == "mds":
            self._add_samples(batch)
            return
        if self._stack is None:
            self._open(batch.schema)
        entry = self._entry
        entry["rows"] += batch.num_rows
        entry["bytes"] += int(pc.sum(batch.column("n_bytes")).as_py() or 0)
        if self.fmt == "parquet":
            self._add_rows(batch)
        elif self.fmt == "jsonl":  # rows become Python objects a slice at a time
            for piece in slices(batch):
                self._file.write(b"".join(orjson.dumps(row) + b"\n" for row in piece.to_pylist()))
        else:
            for piece in slices(batch):
                flat, lengths = self._tokenize(piece)
                self._file.write(flat.astype(np.dtype(self.dtype).newbyteorder("<")).tobytes())
                self._lengths.append(lengths)
            for name, arrays in self._keys.items():
                arrays.append(batch.column(name))

    def _add_samples(self, batch: pa.RecordBatch) -> None:
        """MDS: rows as samples into shards cut as MDSWriter cuts them: a sample that would take the shard past
        the size limit (its bytes and 4 per sample) starts the next one, so the shards are MDSWriter's own."""
        for piece in slices(batch):
            tokens = lengths = None
            if self.tokenizer is not None:
                flat, lengths = self._tokenize(piece)
                tokens = np.split(flat.astype(np.dtype(self.dtype).newbyteorder("<")), np.cumsum(lengths)[:-1])
            if self._stack is None:
                self._open(piece.schema)
            try:
                samples = mds.encode_samples(piece, self._columns, tokens)
            except ValueError as exc:
                raise ExportError(str(exc)) from None
            n_bytes = piece.column("n_bytes").to_numpy(zero_copy_only=False)
            start = 0
            while start < len(samples):
                if self._stack is None:
                    self._open(piece.schema)
                end, size = start, self._shard_bytes
                while end < len(samples) and (size + len(samples[end]) + 4 <= self.part_bytes or not self._sizes and end == start):
                    size += len(samples[end]) + 4
                    end += 1
                self._samples.write(b"".join(samples[start:end]))
                self._sizes += map(len, samples[start:end])
                self._shard_bytes = size
                self._entry["rows"] += end - start
                self._entry["bytes"] += int(n_bytes[start:end].sum())
                if lengths is not None:
                    self._lengths.append(lengths[start:end])
                if end < len(samples):
                    self.finish()
                start = end

    def _add_rows(self, batch: pa.RecordBatch) -> None:
        """Parquet: rows into row groups of ROW_GROUP_ROWS rows or ROW_GROUP_BYTES of text, whichever comes
        first, cut at the same rows however the batches come."""
        while batch.num_rows:
            rows = np.arange(1, batch.num_rows + 1) + self._group_rows
            sizes = self._group_bytes + np.cumsum(batch.column("n_bytes").to_numpy(zero_copy_only=False))
            full = np.flatnonzero((rows >= ROW_GROUP_ROWS) | (sizes >= ROW_GROUP_BYTES))
            if not len(full):
                self._group.append(batch)
                self._group_rows, self._group_bytes = int(rows[-1]), int(sizes[-1])
                return
            cut = int(full[0]) + 1
            self._group.append(batch.slice(0, cut))
            self._flush_group()
            batch = batch.slice(cut)

    def _flush_group(self) -> None:
        if self._group:
            self._writer.write_table(pa.Table.from_batches(self._group), row_group_size=ROW_GROUP_ROWS)
        self._group, self._group_rows, self._group_bytes = [], 0, 0

    def finish(self, schema: pa.Schema | None = None) -> None:
        """Publish the open part (an empty one with `schema` where no row came at all)."""
        if self._stack is None:
            self._open(schema)
        entry, stack = self._entry, self._stack
        with stack:
            if self.fmt == "parquet":
                self._flush_group()
                self._writer.close()
            elif self.fmt == "mds":
                self._write_shard(entry)
            elif self.fmt in TOKENIZED:
                lengths = np.concatenate(self._lengths) if self._lengths else np.empty(0, np.int64)
                entry["tokens"] = int(lengths.sum())
                self._write_index(entry, lengths)
        self._stack = None
        self.parts.append(entry)
        failpoint.after_part("export", len(self.parts))

    def abort(self) -> None:
        """Drop the open part: its files are never published."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.__exit__(ExportError, ExportError("export failed"), None)

    def _write_shard(self, entry: dict) -> None:
        """An MDS shard: its header (sample count, offsets, config), then the samples from the local file."""
        sizes = np.array(self._sizes, dtype=np.int64)
        if self.tokenizer is not None:
            entry["tokens"] = int(sum(int(lengths.sum()) for lengths in self._lengths))
        try:
            header = mds.shard_header(sizes, self._config)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        self._samples.seek(0)
        with self.out.open_atomic(entry["file"]) as shard:
            shard.write(header)
            shutil.copyfileobj(self._samples, shard, 8 * 1024 * 1024)
        if len(sizes):  # an empty selection's one part is no shard of MosaicML's
            self.shards.append(mds.index_entry(entry["file"], len(sizes), len(header) + int(sizes.sum()), self._columns,
                                               self.part_bytes))

    def _write_index(self, entry: dict, lengths: np.ndarray) -> None:
        """The index next to a part's token ids, in its format."""
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        dtype = np.dtype(self.dtype)
        if self.fmt == "tokens":
            keys = {name: pa.concat_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays])
                    if arrays else pa.array([], pa.int64()) for name, arrays in self._keys.items()}
            self.out.write_parquet(pa.table({**keys, "offset": offsets, "n_tokens": lengths}), entry["index"])
        elif self.fmt == "megatron":
            # Megatron-LM's indexed dataset: each row one sequence and one document
            idx = b"".join([
                MEGATRON_HEADER, struct.pack("<Q", 1), struct.pack("<B", MEGATRON_DTYPES[dtype]),
                struct.pack("<Q", len(lengths)), struct.pack("<Q", len(lengths) + 1),
                lengths.astype("<i4").tobytes(), (offsets * dtype.itemsize).astype("<i8").tobytes(),
                np.arange(len(lengths) + 1, dtype="<i8").tobytes(),
            ])
            self.out.write_atomic(idx, entry["index"])
        else:
            # datatrove's tokenized files, which nanotron's `DatatroveFolderDataset` reads: document ends
            # in tokens (uint64) and `tokenizer|token size`, token count
            self.out.write_atomic(np.cumsum(lengths).astype("<u8").tobytes(), entry["index"])
            name = getattr(self.tokenizer, "name_or_path", "") or "Unknown Tokenizer"
            total = int(lengths.sum())
            self.out.write_atomic(f"{name}|{dtype.itemsize}\n{total}\n{total:,}T".encode(), entry["metadata"])

    def _tokenize(self, piece: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        return tokenize(self.tokenizer, piece, self.dtype)

    def dataset_index(self) -> bytes | None:
        """MDS: `index.json`, the shards in order (None for the other formats)."""
        return mds.index(self.shards) if self.fmt == "mds" else None


def _files_of(manifest: dict) -> set[str]:
    files = {p[key] for p in manifest.get("parts", []) for key in ("file", "index", "metadata") if key in p}
    return files | {manifest[key] for key in ("card", "dataset_index") if isinstance(manifest.get(key), str)}


def dataset_card(fmt: str, view: str, parts: list[dict], record: dict) -> bytes:
    """A Hugging Face dataset card (README.md) whose `configs` name the parts in order, so that
    `datasets.load_dataset(FOLDER)` reads the rows and never the manifest."""
    files = "".join(f"    - {p['file']}\n" for p in parts)
    rows, size = sum(p["rows"] for p in parts), sum(p["bytes"] for p in parts)
    glob = f"part-*.{fmt}"
    return (
        f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path:\n{files}---\n\n"
        f"# {view}\n\nA corpusdb export: {rows:,} rows ({size:,} bytes of text) of `{view}` at version "
        f"{record.get('version')} of {record.get('database', 'the database')}, in {len(parts)} {fmt} part(s), "
        "in the selection's order. `manifest.json` holds the provenance (the SQL of every view and policy "
        "read, model identities, per-part counts); it is not data.\n\n"
        "```python\n"
        "import datasets\n"
        "rows = datasets.load_dataset(FOLDER, split=\"train\")  # this card names the parts\n"
        f"rows = datasets.load_dataset(\"{'json' if fmt == 'jsonl' else 'parquet'}\", data_files=f\"{{FOLDER}}/{glob}\", "
        "split=\"train\")\n"
        "```\n\n"
        f"Other readers of the folder take the parts by their glob, `{glob}` (e.g. datatrove's "
        f"`{'JsonlReader' if fmt == 'jsonl' else 'ParquetReader'}(FOLDER, glob_pattern=\"{glob}\")`, polars' "
        f"`pl.{'read_ndjson' if fmt == 'jsonl' else 'read_parquet'}(f\"{{FOLDER}}/{glob}\")`).\n"
    ).encode()


def _read_json(out: Location, name: str) -> dict | None:
    if not out.exists(name):
        return None
    try:
        data = json.loads(out.read_bytes(name))
    except ValueError as exc:
        raise ExportError(f"{out.url}/{name} is not valid JSON ({exc}); move the folder aside and export again") from exc
    return data if isinstance(data, dict) else None


def unit_order(columns: list[str]) -> str:
    """The deterministic order of a relation's rows: by doc_id, and an instance view's instances in text order."""
    if "byte_start" in columns:
        return "doc_id, byte_start"
    return "doc_id, instance_id" if "instance_id" in columns else "doc_id"


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
) -> dict:
    """Export the rows of VIEW (a view name, macro call or select) to URL; returns the manifest.

    Args:
        format: parquet, jsonl or mds (all columns), tokens, megatron or datatrove (need `tokenizer`),
            litdata (keys, text and n_bytes; needs the litdata package).
        part_size_mb: text bytes per part (mds, litdata: encoded bytes per shard or chunk).
        tokenizer: a folder or hub id with a tokenizer that has an EOS token (mds, litdata: adds `tokens`).
        storage_options: fsspec options for URL (default: the database's).
        overwrite: replace an export of something else that is already at URL (or write the same again).

    Raises:
        ValueError: bad format or size.
        ExportError: URL is a file, holds files corpusdb did not write, or holds another export
            and overwrite is False.
        QueryError: VIEW does not run.
        ModelError: the tokenizer cannot be loaded.
    """
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if part_size_mb <= 0:
        raise ValueError(f"part_size_mb {part_size_mb} must be positive")
    if format in TOKENIZED and not tokenizer:
        raise ValueError(f"format {format} needs a tokenizer (--tokenizer PATH_OR_HUB_ID)")
    if format == "mds" and part_size_mb > MDS_MAX_PART_MB:
        raise ValueError(f"part_size_mb {part_size_mb:g} is too large for an MDS shard (uint32 offsets); pass "
                         f"{MDS_MAX_PART_MB:g} or less (MosaicML's default shard is 64)")
    started = time.perf_counter()
    sql = relation_sql(db, view)
    columns = db.sql(f"select * from ({sql}) limit 0").columns
    for needed in ("doc_id", "text", "n_bytes"):
        if needed not in columns:
            raise ValueError(f"{view!r} has no {needed!r} column; export needs rows of documents (doc_id, text, n_bytes)")
    ordered = is_ordered(db, sql)
    # a view that hands out documents' text unchanged streams it from the parts, in place order
    kind = None if ordered else text_kind(db, sql)[0]
    select = sql if ordered or kind else f"select * from ({sql}) order by {unit_order(columns)}"
    record = provenance(db, sql)
    warnings = _order_warnings(view, sql, record, columns, ordered, "place" if kind else unit_order(columns))
    loaded = load_tokenizer(tokenizer) if tokenizer else None
    from corpusdb.scoring.identity import tokenizer_hash

    settings = {"format": format, "part_size_mb": part_size_mb,
                "order": "view" if ordered else "place" if kind else unit_order(columns),
                "tokenizer_hash": tokenizer_hash(loaded) if loaded is not None else None}
    key = xxhash.xxh3_64_hexdigest(json.dumps([record["inputs_hash"], settings], sort_keys=True).encode())[:8]
    out = Location(url, db.location.storage_options if storage_options is None else storage_options)
    with ExportLock(out, url):  # one export at a time into a folder; it makes and (if left empty) removes the folder
        old, journal = _check_target(out, url, key, overwrite)
        if journal is not None:  # an unfinished or interrupted run: its files are ours by the journal
            _clean(out, _journal_files(journal) - _files_of(old or {}))
            out.remove(out.join(JOURNAL))
        if old is not None and old.get("key") == key and not overwrite:
            # what a killed re-run left, e.g. half a manifest
            out.remove_temporaries("", (_files_of(old) | {MANIFEST, JOURNAL}).__contains__)
            return {**old, "reused": True}  # the same selection, made the same way
        journal = {"key": key, "files": [], "replaces": sorted(_files_of(old or {})),
                   "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        part_bytes = int(part_size_mb * 1024 * 1024)
        if format == "litdata":
            from corpusdb.litdata_sink import LitDataSink

            sink = LitDataSink(out, key, journal, loaded, part_bytes)
        else:
            sink = _PartSink(out, format, key, journal, loaded, part_bytes)
        try:
            with db.query_errors():
                # MDS and LitData cut their shards and chunks themselves, by their encoded size, as their writers do
                limit = sys.maxsize if format in STREAMING else part_bytes
                _write_parts(db, select, kind, view, sink, limit, progress)
            manifest = {
                "format": format, "view": view, "key": key, **settings, **record, "database": db.url, "parts": sink.parts,
                "n_rows": sum(p["rows"] for p in sink.parts), "n_bytes": sum(p["bytes"] for p in sink.parts),
                "tokenizer": tokenizer, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "corpusdb": VERSION, "seconds": round(time.perf_counter() - started, 3),
                "missing": missing_choices(db, sql),  # what the selection does with units a policy could not judge
                **({"warnings": warnings} if warnings else {}),
            }
            if format in ("parquet", "jsonl"):  # readers of the folder (datasets) find the parts, not the manifest
                claim(out, journal, CARD)
                out.write_atomic(dataset_card(format, view, sink.parts, {"version": db.version, "database": db.url}), CARD)
                manifest["card"] = CARD
            index = sink.dataset_index()
            if index is not None:  # the readers' own listing: StreamingDataset(FOLDER) of streaming or litdata
                claim(out, journal, DATASET_INDEX)
                out.write_atomic(index, DATASET_INDEX)
                manifest["dataset_index"] = DATASET_INDEX
            if format in TOKENIZED or (format in STREAMING and loaded is not None):
                manifest.update(
                    n_tokens=sum(p["tokens"] for p in sink.parts), dtype=np.dtype(sink.dtype).name,
                    eos_token_id=sink.tokenizer.eos_token_id, vocab_size=len(sink.tokenizer),
                )
            out.write_atomic(json.dumps(manifest, indent=1).encode(), MANIFEST)
        except BaseException:
            # leave the folder as it was found: the old export, if any, is untouched (a forced re-export
            # of the same key rewrote its files with the same bytes, so those stay)
            _clean(out, set(journal["files"]) - _files_of(old or {}))
            out.remove(out.join(JOURNAL))
            raise
        _clean(out, _files_of(old or {}) - _files_of(manifest))  # the replaced export's files
        _clean(out, {JOURNAL})
        out.remove_temporaries("", (_files_of(manifest) | {MANIFEST, JOURNAL}).__contains__)
        return manifest


class ExportLock:
    """One export at a time into a folder: `.corpusdb-export.lock`, created exclusively (a hard link, or a
    conditional PUT on S3), holds the host, pid and a heartbeat rewritten every HEARTBEAT seconds. A
    lock whose process is gone (same host) or whose heartbeat stopped LEASE seconds ago (a killed
    export elsewhere) is taken over; while a live one holds it, an export waits (saying so once on
    stderr), then reuses or replaces what that one made: two concurrent `--overwrite` exports never
    mix their parts under one manifest, and ranks that export the same selection at once all succeed."""

    HEARTBEAT, LEASE, POLL = 30.0, 120.0, 0.5

    def __init__(self, out: Location, url: str):
        self.out, self.url = out, url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.created = False

    def _record(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}).encode()

    def __enter__(self) -> ExportLock:
        if self.out.fs.isfile(self.out.path):
            raise ExportError(f"{self.url} is a file; export into a folder (a new or empty one)")
        self.created = not self.out.exists("")
        if self.out.is_local:
            self.out.fs.makedirs(self.out.path, exist_ok=True)
        told = False
        while not self.out.create_exclusive(self._record(), LOCK):
            holder = _read_json(self.out, LOCK) or {}
            if self._stale(holder):  # a killed export's lock: take it over (one of several takers wins)
                if (_read_json(self.out, LOCK) or {}) == holder:  # not taken over by another meanwhile
                    self.out.remove(self.out.join(LOCK))
                continue
            if not told:  # another export writes here now: wait for it (then reuse or replace what it made)
                print(f"waiting for the export writing into {self.url} (host {holder.get('host', '?')}, pid "
                      f"{holder.get('pid', '?')}) to finish; if it was killed on another machine, remove "
                      f"{self.url.rstrip('/')}/{LOCK}", file=sys.stderr)
                told = True
            time.sleep(self.POLL)
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True  # that export's process is gone: it was killed
            except OSError:
                pass
            else:
                with contextlib.suppress(OSError, IndexError):  # Linux: a killed process its parent has not reaped
                    with open(f"/proc/{holder['pid']}/stat", encoding="ascii", errors="replace") as stat:
                        if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                            return True
        return time.time() - float(holder.get("heartbeat") or 0) > self.LEASE

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT):
            with contextlib.suppress(Exception):  # a missed beat only shortens the lease others see
                self.out.write_atomic(self._record(), LOCK)

    def _remove_if_created(self) -> None:
        if self.created and self.out.is_local and self.out.fs.exists(self.out.path) and not self.out.fs.ls(self.out.path):
            self.out.fs.rmdir(self.out.path)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.out.remove(self.out.join(LOCK))
        self.out.remove_temporaries("", {LOCK}.__contains__)
        self._remove_if_created()


def _order_warnings(view: str, sql: str, record: dict, columns: list[str], ordered: bool, order: str) -> list[str]:
    """A warning when a curriculum's order does not reach the export: the view selects from
    `curriculum(...)` but does not end in an ORDER BY (a join, filter or union after it may
    reorder rows), so the rows are exported in `order` instead."""
    texts = [sql, *record["definitions"].values()]
    if ordered or not ("curriculum_rank" in columns or any(re.search(r"\bcurriculum\s*\(", text) for text in texts)):
        return []
    return [f"{view!r} selects from curriculum(...) but its rows have no order of their own (a join, filter or union after "
            f"the curriculum may reorder them), so they are exported in {order} order, not the curriculum's; end the "
            "view with `order by curriculum_rank` to keep it"]


def _journal_files(journal: dict) -> set[str]:
    return set(journal.get("files", [])) | set(journal.get("replaces", []))


def _clean(out: Location, names: set[str]) -> None:
    """Remove files of ours (and their temporaries, left by a killed write) from the export folder."""
    for name in sorted(names):
        out.remove(out.join(name))
    out.remove_temporaries("", names.__contains__)


def _check_target(out: Location, url: str, key: str, overwrite: bool) -> tuple[dict | None, dict | None]:
    """The export and the journal already at URL, after checking it holds nothing else (called under
    the folder's ExportLock, which has refused a URL that is a file).

    Raises:
        ExportError: URL holds files corpusdb did not write, or holds another export and overwrite
            is False.
    """
    old, journal = _read_json(out, MANIFEST), _read_json(out, JOURNAL)
    ours = _files_of(old or {}) | _journal_files(journal or {})
    for name in ours:
        check_file_name(url, name)
    ours |= {MANIFEST, JOURNAL, LOCK}
    present = [posixpath.relpath(path, out.path) for path in out.fs.find(out.path)] if out.exists("") else []
    foreign = sorted(name for name in present if name not in ours and temporary_of(name) not in ours)
    if foreign:
        raise ExportError(f"{url} holds {len(foreign)} file(s) corpusdb did not write (e.g. {foreign[0]!r}); "
                          "export into a new or empty folder (nothing there was changed)")
    if old is not None and old.get("key") != key and not overwrite:
        raise ExportError(f"{url} already holds another export ({old.get('view')!r} at version {old.get('version')}, "
                          f"inputs {str(old.get('inputs_hash'))[:12]}: another selection, other data or other settings); "
                          "pass --overwrite to replace it")
    return old, journal


def _write_parts(db: Database, select: str, kind: str | None, view: str, sink: _PartSink, limit: int,
                 progress: bool | None) -> None:
    cursor = db.con.cursor()
    try:
        if kind:  # DuckDB sorts the keys by place; the text is read from the parts a batch at a time
            batches = placed_batches(db, select, kind, cursor)
            first = next(batches, None)
            if first is None:
                schema = cursor.sql(f"select * from ({select}) limit 0").to_arrow_table().schema
                schema = schema.set(schema.get_field_index("text"), pa.field("text", pa.string()))
            else:
                schema = first.schema
            reader = itertools.chain([first] if first is not None else [], batches)
        else:
            reader = cursor.sql(select).to_arrow_reader(4096)
            schema = reader.schema
        held_bytes = 0
        # the parts are encoded and written on a thread of their own (pyarrow and the tokenizer release
        # the GIL) while the next batch is read; the queue's depth bounds what waits
        writes = WriteQueue(depth=2)
        try:
            with tqdm(unit="doc", desc=f"export {view}", disable=(not progress) if progress is not None else None,
                      dynamic_ncols=True) as bar:
                for batch in reader:
                    bar.update(batch.num_rows)
                    while batch.num_rows:
                        # cut the batch where the part reaches its size, so parts are about part_size_mb
                        running = held_bytes + np.cumsum(batch.column("n_bytes").to_numpy(zero_copy_only=False))
                        cut = int(np.searchsorted(running, limit, side="left")) + 1
                        if cut > batch.num_rows:
                            writes.submit(sink.add, batch)
                            held_bytes = int(running[-1])
                            break
                        writes.submit(sink.add, batch.slice(0, cut))
                        writes.submit(sink.finish)
                        held_bytes = 0
                        batch = batch.slice(cut)
                writes.drain()
                if sink.open or not sink.parts:
                    sink.finish(schema)
        except BaseException:
            writes.abort()
            sink.abort()
            raise
        finally:
            writes.close()
    finally:
        cursor.close()
