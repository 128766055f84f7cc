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
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import xxhash
from tqdm.auto import tqdm

from corpusdb import mds
from corpusdb.cut import placed_batches, text_kind
from corpusdb.distributed.orders import read_order, tie_broken
from corpusdb.distributed.places import distributed_plan
from corpusdb.errors import ExportError, StorageError
from corpusdb.export_base import JOURNAL, BytesCut, claim, part_end
from corpusdb.part_sink import TOKENIZED, PartSink, load_tokenizer, part_files
from corpusdb.provenance import is_ordered, missing_choices, provenance
from corpusdb.release import VERSION
from corpusdb.storage import Location, WriteQueue, temporary_of
from corpusdb.views import relation_sql

if TYPE_CHECKING:
    from corpusdb.db import Database

FORMATS = ("parquet", "jsonl", "tokens", "megatron", "datatrove", "mds", "litdata")
STREAMING = ("mds", "litdata")  # cut into shards or chunks by their encoded size, listed in index.json
MANIFEST = "manifest.json"
CARD = "README.md"  # a Hugging Face dataset card naming the parts (parquet and jsonl exports)
DATASET_INDEX = "index.json"  # the shards (mds) or chunks (litdata) in order, as their readers want
MDS_MAX_PART_MB = 2048.0  # an MDS shard addresses its samples with uint32 offsets
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
    """The JSON object in `name`, or None where there is none (or it went away meanwhile: a lock released)."""
    if not out.exists(name):
        return None
    try:
        raw = out.read_bytes(name)
    except StorageError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return None
        raise
    try:
        data = json.loads(raw)
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
    shards: int = 1,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    task_memory_limit: str | None = None,
) -> dict:
    """Export the rows of VIEW (a view name, macro call or select) to URL; returns the manifest.

    Args:
        format: parquet, jsonl or mds (all columns), tokens, megatron or datatrove (need `tokenizer`),
            litdata (keys, text and n_bytes; needs the litdata package).
        part_size_mb: text bytes per part (mds, litdata: encoded bytes per shard or chunk).
        tokenizer: a folder or hub id with a tokenizer that has an EOS token (mds, litdata: adds `tokens`).
        storage_options: fsspec options for URL (default: the database's).
        overwrite: replace an export of something else that is already at URL (or write the same again).
        shards: write the parts as this many shards at once (`corpusdb.export_shards`): the same bytes as one
            process, in a format other than litdata (and other than mds with a tokenizer: its shards are cut by the
            token ids' bytes). A call of a policy with a distributed plan is cut by
            this many tasks too (`corpusdb.distributed.places`); another view must hand out documents' or
            instances' text unchanged, and this process cuts it on its keys.
        executor, workers, address: with shards > 1: local processes (at most `workers` at once) or Ray tasks on
            the cluster at `address`.
        task_memory_limit: DuckDB's memory limit in each task of a cut by tasks ("2GB") [default:
            CORPUSDB_MEMORY_LIMIT, else DuckDB's].

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
    if shards < 1:
        raise ValueError(f"shards {shards} must be at least 1")
    if shards > 1 and format == "litdata":
        raise ValueError("--shards: litdata's chunks are cut by LitData's own writer as the rows come, in one process; "
                         "export it without --shards")
    if shards > 1 and format == "mds" and tokenizer:
        raise ValueError("--shards: an MDS export with a tokenizer cuts its shards by the token ids' bytes, which only "
                         "tokenizing tells; export it without --shards, or without --tokenizer")
    started = time.perf_counter()
    sql = relation_sql(db, view)
    columns = db.sql(f"select * from ({sql}) limit 0").columns
    for needed in ("doc_id", "text", "n_bytes"):
        if needed not in columns:
            raise ValueError(f"{view!r} has no {needed!r} column; export needs rows of documents (doc_id, text, n_bytes)")
    ordered = is_ordered(db, sql)
    # a view that hands out documents' text unchanged streams it from the parts, in place order
    kind = None if ordered else text_kind(db, sql)[0]
    # documents (or instances) ordered by one column: its ties in unit order, as the tasks of --shards order them
    order = read_order(db, sql) if ordered else None
    select = (tie_broken(order, sql) if order is not None else sql if ordered or kind
              else f"select * from ({sql}) order by {unit_order(columns)}")
    # a call of a policy with a distributed plan, or that ordered relation: its cut is found by tasks, in its own order
    # where it has one
    policy = distributed_plan(view, db, sql) if shards > 1 and (kind is not None or ordered) else None
    if shards > 1 and not kind and policy is None:
        raise ValueError(f"--shards: {view!r} does not hand out documents' or instances' text unchanged"
                         f"{' (it orders its rows)' if ordered else ''}, so its parts cannot be cut on keys alone; "
                         "export it without --shards")
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
            _remove_work(out, journal)
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
            sink = PartSink(out, format, key, journal, loaded, part_bytes)
        try:
            with db.query_errors():
                if shards > 1:
                    _write_sharded(db, select, kind, view, columns, sink, out, journal,
                                   (tokenizer, shards, executor, workers, address, task_memory_limit), progress, policy,
                                   ordered)
                else:  # MDS and LitData cut their shards and chunks themselves, by their encoded size, as their writers do
                    _write_parts(db, select, kind, view, sink, sys.maxsize if format in STREAMING else part_bytes, progress)
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
        # a killed holder's leftovers; a younger one may be another export's lock being created right now
        self.out.remove_temporaries("", {LOCK}.__contains__, min_age=self.LEASE)
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
    work = check_file_name(url, journal["work"]) + "/" if (journal or {}).get("work") else None  # a killed run's tasks'
    present = [posixpath.relpath(path, out.path) for path in out.fs.find(out.path)] if out.exists("") else []
    foreign = sorted(name for name in present if name not in ours and temporary_of(name) not in ours
                     and not (work and name.startswith(work)))
    if foreign:
        raise ExportError(f"{url} holds {len(foreign)} file(s) corpusdb did not write (e.g. {foreign[0]!r}); "
                          "export into a new or empty folder (nothing there was changed)")
    if old is not None and old.get("key") != key and not overwrite:
        raise ExportError(f"{url} already holds another export ({old.get('view')!r} at version {old.get('version')}, "
                          f"inputs {str(old.get('inputs_hash'))[:12]}: another selection, other data or other settings); "
                          "pass --overwrite to replace it")
    return old, journal


def _write_sharded(db: Database, select: str, kind: str, view: str, names: list[str], sink: PartSink, out: Location,
                   journal: dict, how: tuple, progress: bool | None, policy=None, ordered: bool = False) -> None:
    """The parts written by shards (`corpusdb.export_shards`), their entries in `sink.parts` in order; `names` are
    the columns of `select`. A call of a policy with a distributed plan (`policy`) is cut by tasks
    (`corpusdb.distributed.places`), in place order or (`ordered`) its own; any other view, which hands out
    documents' or instances' text unchanged (`select` is its SQL), by the driver's DuckDB in place order."""
    from corpusdb.distributed.places import placed_plans
    from corpusdb.execute import map_tasks
    from corpusdb.export_shards import deal, plan_parts, write_shard

    tokenizer, shards, executor, workers, address, memory_limit = how

    def files(index: int) -> list[str]:  # the files of export part `index`
        return [v for k, v in part_files(sink.fmt, index, sink.key).items() if k != "prefix"]

    # MDS: the parts are MDSWriter's shards, cut by their samples' bytes (the columns' encodings: of the rows' schema)
    samples = mds.encodings(_empty_schema(db, select)) if sink.fmt == "mds" else None
    try:
        if policy is not None:
            journal["work"] = f"_work-{sink.key}"  # the tasks' files, in a folder of their own: ours by the journal
            claim(out, journal)
            work = Location(out.url.rstrip("/") + "/" + journal["work"], out.storage_options)
            plans = placed_plans(db, policy, work, sink.part_bytes, shards, {"executor": executor, "workers": workers,
                                 "address": address, "memory_limit": memory_limit}, progress, ordered, samples)
            for plan in plans:
                plan["work"] = journal["work"]
            claim(out, journal, *(name for plan in plans for name in files(plan["index"])))
        else:
            cutter = mds.ShardCut(samples, sink.part_bytes) if samples else BytesCut(sink.part_bytes)
            plans = plan_parts(db, select, kind, names, out, sink.key, journal, cutter, files)
        if not plans:  # nothing selected: the one empty part, as one process writes it
            sink.finish(_empty_schema(db, select))
            return
        arguments = [(db.location.url, db.location.storage_options, db.snapshot.parts("documents"), kind, names, out.url,
                      out.storage_options, sink.fmt, sink.key, tokenizer, sink.part_bytes, group) for group in deal(plans, shards)]
        if progress:
            print(f"export {view}: {len(plans)} parts in {len(arguments)} shards ({executor}; the cut by "
                  f"{'tasks' if policy is not None else 'this process'})", file=sys.stderr)
        results = map_tasks(write_shard, arguments, executor=executor, workers=workers, address=address, what="an export shard")
        for entries in results:
            for entry, shard in entries:
                sink.parts.append(entry)
                if shard is not None:
                    sink.shards.append(shard)
        _clean(out, {plan["plan"] for plan in plans if "plan" in plan})
    finally:
        _remove_work(out, journal)


def _remove_work(out: Location, journal: dict) -> None:
    """The distributed cut's work folder named in the journal, if any (done with, or left by a killed run)."""
    work = journal.get("work")
    if work and out.exists(check_file_name(out.url, work)):
        out.fs.rm(out.join(work), recursive=True)


def _empty_schema(db: Database, select: str) -> pa.Schema:
    """The schema of the rows of `select` (a pass-through view) as an export writes them: its text a string."""
    cursor = db.con.cursor()
    try:
        schema = cursor.sql(f"select * from ({select}) limit 0").to_arrow_table().schema
    finally:
        cursor.close()
    return schema.set(schema.get_field_index("text"), pa.field("text", pa.string()))


def _write_parts(db: Database, select: str, kind: str | None, view: str, sink: PartSink, limit: int,
                 progress: bool | None) -> None:
    cursor = db.con.cursor()
    try:
        if kind:  # DuckDB sorts the keys by place; the text is read from the parts a batch at a time
            batches = placed_batches(db, select, kind, cursor)
            first = next(batches, None)
            if first is None:
                schema = _empty_schema(db, select)
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
                        cut, running = part_end(held_bytes, batch.column("n_bytes").to_numpy(zero_copy_only=False), limit)
                        if cut > batch.num_rows:
                            writes.submit(sink.add, batch)
                            held_bytes = running
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
