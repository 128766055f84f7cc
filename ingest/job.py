"""The ingestion job: input files -> deduplicated, immutable Parquet parts of `documents`.

    corpusdb ingest demo/db tests/data/corpus/*.jsonl.gz --source fixture

How a job stays exact under crashes, re-runs, shards and other jobs:
- Each input file version gets a key (hash of its URL, size, ETag/mtime and the read options). Its
  documents go to parts `documents/part-<key>-<chunk>-<token>.parquet`, each written atomically
  under a name no other write uses. Finished inputs are committed (`corpusdb.versions`) every
  `commit_seconds` and at the end; only committed parts are ever read, and a committed input is
  never ingested again. A killed job leaves at most its uncommitted parts as unreferenced files
  (`corpusdb vacuum` removes them); its re-run redoes exactly the uncommitted inputs.
- A document already in the database, or earlier in this job's input order, is not written
  again. Inputs are processed in sorted URL order, so the table does not depend on where a crash
  happened.
- `shard=(i, n)` processes every n-th input. Shards and other jobs running at once commit on top
  of each other; each commit removes documents that a concurrent commit also holds
  (`corpusdb.ingest.commit`), keeping the copy that comes first in job order among a job's shards, so a
  sharded job leaves the table a single run leaves.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from tqdm.auto import tqdm

from corpusdb import failpoint
from corpusdb.db import Database
from corpusdb.storage import Location, WriteQueue, WrittenFile
from corpusdb.tables import schema_key
from corpusdb.text import doc_ids, normalize_texts
from corpusdb.world import parse_shard
from corpusdb.ingest.commit import Committer, FinishedInput, NewPart, part_key, part_name
from corpusdb.ingest.docids import DocIdSet, first_occurrences
from corpusdb.ingest.readers import Reader, ReadOptions
from corpusdb.ingest.sources import InputFile, list_inputs

ROW_GROUP_ROWS = 8192

STALE_TEMPORARY_SECONDS = 600.0  # a temporary this old is no write in flight (a part takes seconds)

@dataclass
class IngestReport:
    """What an ingest job did."""

    source: str
    n_inputs: int = 0
    n_inputs_done_before: int = 0
    n_temporaries_removed: int = 0  # left by a killed run of these inputs
    n_inputs_processed: int = 0
    n_unknown_skipped: int = 0
    n_docs_read: int = 0
    n_docs_written: int = 0
    n_duplicates: int = 0
    n_bytes_read: int = 0
    n_text_bytes_written: int = 0
    n_parts_written: int = 0
    n_cross_shard_duplicates_removed: int = 0  # rows removed at commit: held by a concurrent commit too
    n_inputs_taken: int = 0  # inputs another job committed while this one read them
    version: int = 0  # the version the job's last commit made
    n_id_parts_read: int = 0  # committed parts whose doc_ids were read for the duplicate check (not indexed)
    n_index_bytes_read: int = 0  # bytes of the doc_id index the duplicate check read
    bad_records: dict = field(default_factory=dict)
    bad_examples: list = field(default_factory=list)
    meta_found: dict = field(default_factory=dict)  # meta column -> records read that have its field
    meta_fields: dict = field(default_factory=dict)  # meta column -> the field (or @file/@line) it copies
    seconds: float = 0.0

    @property
    def n_bad_records(self) -> int:
        return sum(self.bad_records.values())

    def meta_warnings(self) -> list[str]:
        """One line per --meta field that no record read has (a misspelt field makes an all-NULL column)."""
        return [
            f"--meta {column}={self.meta_fields[column]}: none of the {self.n_docs_read:,} records read has the field "
            f"{self.meta_fields[column]!r}, so column {column!r} is NULL for all of them; check the field name "
            "(a dotted path such as metadata.url reaches into objects)"
            for column, found in self.meta_found.items() if found == 0 and self.n_docs_read
        ]

    def to_dict(self) -> dict:
        data = {key: value for key, value in self.__dict__.items()}
        data["n_bad_records"] = self.n_bad_records
        return data

    def summary(self) -> str:
        """One paragraph for people."""
        secs = max(self.seconds, 1e-9)
        lines = [
            f"ingested {self.n_docs_written:,} new documents ({self.n_text_bytes_written / 1e6:,.1f} MB of text) "
            f"from {self.n_inputs_processed} of {self.n_inputs} input files as source {self.source!r} "
            f"in {self.seconds:.1f} s ({self.n_docs_read / secs:,.0f} docs/s, {self.n_bytes_read / 1e6 / secs:,.1f} MB/s read)",
            f"{self.n_duplicates:,} exact duplicates not written again; "
            f"{self.n_inputs_done_before} input files were already done",
        ]
        if self.n_unknown_skipped:
            lines.append(f"{self.n_unknown_skipped} files of unknown format skipped; pass --format text to read them")
        if self.n_bad_records:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.bad_records.items()))
            lines.append(f"{self.n_bad_records} bad records skipped ({reasons})")
        if self.n_cross_shard_duplicates_removed:
            lines.append(f"{self.n_cross_shard_duplicates_removed} documents also committed meanwhile by another job or shard removed")
        if self.n_inputs_taken:
            lines.append(f"{self.n_inputs_taken} input files were committed meanwhile by another job")
        if self.n_temporaries_removed:
            lines.append(f"{self.n_temporaries_removed} temporary files a killed run of these inputs left were removed")
        lines.append(f"committed as version {self.version}")
        return "\n".join(lines)


def default_source(url: str) -> str:
    """Source name from an input URL: its file or folder name without extensions."""
    name = posixpath.basename(url.rstrip("/").split("://", 1)[-1]) or "default"
    while True:
        stem, ext = posixpath.splitext(name)
        if not ext or not stem:
            return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        name = stem


def input_key(item: InputFile, options: ReadOptions, source: str) -> str:
    """16 hex digits naming this version of this input read with these options."""
    identity = [item.url, item.size, item.version, item.format, source, options.text_field, list(options.meta)]
    return xxhash.xxh3_64_hexdigest(json.dumps(identity).encode())


def write_part(location: Location, table: pa.Table, name: str) -> WrittenFile:
    """Write `table` as the documents part `name`, atomically.

    The text column gets neither a dictionary nor min/max statistics: both cost time (15% of the
    write) and neither helps, since texts are unique and no query filters on their order.
    """
    others = [name for name in table.column_names if name != "text"]
    return location.write_parquet(
        table, "documents", name, row_group_size=ROW_GROUP_ROWS, use_dictionary=others, write_statistics=others,
    )


class PartWriter:
    """Buffers documents and writes them, through `writes`, as deduplicated parts of `documents`.

    One writer serves one input, or (`pack`) a run of consecutive inputs: small inputs (a crawl's
    files of a few KB) then share parts of up to `part_bytes` instead of making a part each. A part
    holds either whole finished inputs or documents of the input being read, never both, so an
    input that fails leaves nothing in a part that is handed over. `finish(key, url)` says an
    input is read whole; inputs are handed to the committer, with the parts written since the
    last hand-over, behind those parts on the writer thread (only if every part was written), and
    `on_handed(count)` runs in the caller's thread with the number of inputs handed over.
    `on_part` is called once each part is in place.
    """

    def __init__(
        self, location: Location, key: str, source: str, meta_columns: list[str], seen: DocIdSet, part_bytes: int,
        writes: WriteQueue, committer: Committer, on_part: Callable[[str], None] = lambda path: None,
        pack: bool = False, max_inputs: int = 10_000, on_handed: Callable[[int], None] = lambda count: None,
    ):
        self.location = location
        self.key = key  # names the parts: the first input of the run
        self.source = source
        self.meta_columns = meta_columns
        self.seen = seen
        self.part_bytes = part_bytes
        self.writes = writes
        self.committer = committer
        self.on_part = on_part
        self.pack = pack
        self.max_inputs = max_inputs
        self.on_handed = on_handed
        self.token = uuid.uuid4().hex[:8]
        self.chunk = 0
        self.written: list[NewPart] = []  # appended by the writer thread
        self.handed = 0  # written[:handed] went to the committer with earlier inputs
        self.failed = False  # a part write failed: the inputs are not finished
        self.pending: list[tuple[str, str]] = []  # inputs read whole, their documents in the buffer
        self.current_start = 0  # where the documents of the input being read begin in the buffer
        self.n_docs_written = 0
        self.n_bytes_written = 0
        self.n_duplicates = 0
        self._reset()

    def _reset(self) -> None:
        # the buffered documents, as chunks of (texts, doc_ids, sizes, meta arrays)
        self.chunks: list[tuple[pa.Array, np.ndarray, np.ndarray, dict[str, pa.Array]]] = []
        self.n_buffered = 0
        self.buffered = 0
        self.current_start = 0

    def add(self, texts: pa.Array, meta: dict[str, pa.Array]) -> None:
        """Buffer a batch of one input's records (texts and meta values), writing a part each time the
        buffer fills, at the same documents as adding them one at a time would."""
        # one type for every chunk a part concatenates (a Parquet input's may be large_string)
        texts = normalize_texts(texts if texts.type == pa.string() else texts.cast(pa.string()))
        meta = {column: values if values.type == pa.string() else values.cast(pa.string()) for column, values in meta.items()}
        ids = doc_ids(texts)
        sizes = pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
        costs = np.cumsum(sizes + 64)  # buffered bytes after each document
        start = 0
        while start < len(texts):
            base = int(costs[start - 1]) if start else 0
            # up to the document that fills the part (the buffer holds less than a part between batches)
            end = min(int(np.searchsorted(costs, base + self.part_bytes - self.buffered, side="left")) + 1, len(texts))
            self.chunks.append((texts.slice(start, end - start), ids[start:end], sizes[start:end],
                                {column: meta[column].slice(start, end - start) if column in meta
                                 else pa.nulls(end - start, pa.string()) for column in self.meta_columns}))
            self.n_buffered += end - start
            self.buffered += int(costs[end - 1]) - base
            if self.buffered >= self.part_bytes:
                if self.pending:  # the finished inputs first, as their own part; this one's documents stay
                    self.flush(upto=self.current_start)
                    self.hand_over()
                if self.buffered >= self.part_bytes:
                    self.flush()
            start = end

    def flush(self, upto: int | None = None) -> None:
        """Queue the first `upto` buffered documents (all by default) not seen before as the next
        part (none if all were); the rest stay buffered."""
        upto = self.n_buffered if upto is None else upto
        if not upto:
            return
        texts = pa.concat_arrays([chunk[0] for chunk in self.chunks])
        ids = np.concatenate([chunk[1] for chunk in self.chunks])
        sizes = np.concatenate([chunk[2] for chunk in self.chunks])
        metas = {column: pa.concat_arrays([chunk[3][column] for chunk in self.chunks]) for column in self.meta_columns}
        keep = first_occurrences(ids[:upto])
        keep &= ~self.seen.contains(ids[:upto])
        self.n_duplicates += int(upto - keep.sum())
        if keep.any():
            index = np.flatnonzero(keep)
            kept = None if len(index) == upto else pa.array(keep)
            part = lambda array: array.slice(0, upto) if kept is None else array.slice(0, upto).filter(kept)  # noqa: E731
            columns = {
                "doc_id": pa.array(ids[index]),
                "source": pa.array([self.source] * len(index), pa.string()),
                "text": part(texts),
                "n_bytes": pa.array(sizes[index]),
            }
            for column in self.meta_columns:
                columns[column] = part(metas[column])
            name = part_name(self.key, self.chunk, self.token)
            self.writes.submit(self._write, pa.table(columns), name, self.chunk, on_done=self.on_part)
            self.seen.add(ids[index])
            self.n_docs_written += len(index)
            self.n_bytes_written += int(sizes[index].sum())
        self.chunk += 1
        rest = self.n_buffered - upto
        self._reset()
        if rest:
            self.chunks = [(texts.slice(upto), ids[upto:], sizes[upto:], {c: m.slice(upto) for c, m in metas.items()})]
            self.n_buffered = rest
            self.buffered = int(sizes[upto:].sum()) + 64 * rest

    def _write(self, table: pa.Table, name: str, chunk: int) -> str:
        try:
            written = write_part(self.location, table, name)
        except BaseException:
            self.failed = True
            raise
        self.committer.wrote(written.path)
        info = {"size": written.size, "hash": written.hash, "rows": table.num_rows, "input": self.key, "chunk": chunk,
                "schema": schema_key(table.schema)}
        self.written.append(NewPart(self.location.relpath(written.path), info, table.column("doc_id").to_numpy()))
        return written.path

    def finish(self, key: str, url: str) -> None:
        """Input `key` is read whole: hand it over now, or (packing) once its part is full."""
        self.pending.append((key, url))
        self.current_start = self.n_buffered
        if not self.pack or self.buffered >= self.part_bytes or len(self.pending) >= self.max_inputs:
            self.flush()
            self.hand_over()

    def hand_over(self) -> None:
        """Queue, behind the parts written so far, the hand-over of the pending inputs to the committer."""
        group, self.pending = self.pending, []
        if not group:
            return

        def done() -> int:
            if self.failed:
                return 0
            parts, self.handed = self.written[self.handed :], len(self.written)
            self.committer.add(FinishedInput([key for key, _ in group], [url for _, url in group], parts))
            return len(group)

        self.writes.submit(done, on_done=self.on_handed)


def run_ingest(
    db: Database,
    sources: list[str],
    *,
    source: str | None = None,
    text_field: str = "text",
    meta: tuple[tuple[str, str], ...] | dict = (),
    format: str = "auto",  # noqa: A002 - the CLI option's name
    on_error: str = "raise",
    shard: str | tuple[int, int] | None = None,
    part_size_mb: float = 128.0,
    progress: bool | None = None,
    storage_options: dict | None = None,
    commit_seconds: float = 60.0,
) -> IngestReport:
    """Ingest files, folders or globs (any fsspec URL) into the `documents` table of `db`.

    Args:
        source: name stored in the `source` column; default: the first SOURCE's file name stem.
        text_field: JSON field (dotted path) or Parquet column holding the text.
        meta: (column, field) pairs copied into VARCHAR meta columns; field may be `@file` or `@line`.
        format: auto (from the extension), jsonl, parquet or text (one document per file).
        on_error: raise at the first bad record, or skip bad records and count them.
        shard: (i, n) or "i/n": process every n-th input starting at i.
        part_size_mb: text bytes per part before a new part starts.
        progress: show a progress bar (default: when stderr is a terminal).
        storage_options: fsspec options for the inputs (default: the database's).
        commit_seconds: commit finished inputs at least this often (a killed job loses at most
            this much work), and at the end.

    Raises:
        InputError: a bad record (with on_error="raise") or an input that cannot be read as asked.
        StorageError: an input or the database cannot be reached, read or written.
    """
    started = time.perf_counter()
    meta_pairs = tuple(meta.items()) if isinstance(meta, dict) else tuple(tuple(pair) for pair in meta)
    options = ReadOptions(text_field=text_field, meta=meta_pairs, on_error=on_error)
    shard_index, num_shards = parse_shard(shard)
    if part_size_mb <= 0:
        raise ValueError(f"part_size_mb {part_size_mb} must be positive")
    db.writable()
    db.refresh()
    location = db.location
    input_options = location.storage_options if storage_options is None else storage_options
    items, unknown = list_inputs(list(sources), format, input_options)
    if not items:
        raise ValueError(f"no input files of a known format under {', '.join(sources)}; pass --format text to read them")
    source = source or default_source(sources[0])
    keys = [input_key(item, options, source) for item in items]
    report = IngestReport(source=source, n_inputs=len(items), n_unknown_skipped=len(unknown), version=db.version)

    committer = Committer(db, keys, write_part, sharded=num_shards > 1)
    seen = committer.seen
    mine = [(item, key) for position, (item, key) in enumerate(zip(items, keys)) if position % num_shards == shard_index]
    todo = [(item, key) for item, key in mine if key not in db.snapshot.inputs]
    report.n_inputs_done_before = len(mine) - len(todo)
    # what a killed run of these inputs left mid-write (old enough not to be a concurrent write)
    own = {key for _, key in todo}
    report.n_temporaries_removed = location.remove_temporaries(
        "documents", lambda name: (part_key(name) or ("",))[0] in own, STALE_TEMPORARY_SECONDS)
    meta_columns = [column for column, _ in meta_pairs]
    report.meta_fields = dict(meta_pairs)
    report.meta_found = {column: 0 for column in meta_columns}
    bad_total = Counter()
    parts_written = 0

    with tqdm(
        total=sum(item.size for item, _ in todo), unit="B", unit_scale=True, unit_divisor=1024, desc=f"ingest {source}",
        disable=(not progress) if progress is not None else None, dynamic_ncols=True,
    ) as bar:

        def on_part(path: str) -> None:
            nonlocal parts_written
            parts_written += 1
            failpoint.after_part("ingest", parts_written)

        def on_bytes(n: int) -> None:
            report.n_bytes_read += n
            bar.update(n)

        def handed(count: int) -> None:
            report.n_inputs_processed += count

        writes = WriteQueue()
        ahead: Reader | None = None  # the next input, downloading while this one is parsed
        last_commit = time.monotonic()
        # small inputs share parts, except in a shard: shards settle shared documents by input order
        pack = num_shards == 1
        writers: list[PartWriter] = []

        def new_writer(key: str) -> PartWriter:
            writers.append(PartWriter(location, key, source, meta_columns, seen, int(part_size_mb * 1024 * 1024), writes,
                                      committer, on_part, pack=pack, on_handed=handed))
            return writers[-1]

        writer: PartWriter | None = None
        try:
            for position, (item, key) in enumerate(todo):
                reader, ahead = ahead or Reader(item, options, input_options, on_bytes), None
                if position + 1 < len(todo):
                    ahead = Reader(todo[position + 1][0], options, input_options, on_bytes)
                    ahead.start()
                if writer is None or not pack:
                    writer = new_writer(key)
                for batch in reader.batches():
                    report.n_docs_read += len(batch)
                    for column, values in batch.meta.items():
                        report.meta_found[column] += len(values) - values.null_count
                    writer.add(batch.texts, batch.meta)
                    rate = report.n_docs_read / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(docs=f"{report.n_docs_read:,}", docs_per_s=f"{rate:,.0f}", refresh=False)
                bad_total.update(reader.bad.counts)
                report.bad_examples.extend(reader.bad.examples[: 5 - len(report.bad_examples)])
                # The input is handed over behind its parts on the writer thread; the next one is read meanwhile.
                writer.finish(key, item.url)
                if time.monotonic() - last_commit >= commit_seconds:
                    writer.flush()
                    writer.hand_over()
                    writes.drain()
                    committer.commit()
                    last_commit = time.monotonic()
            if writer is not None:
                writer.flush()
                writer.hand_over()
            writes.drain()
            committer.commit()
        except BaseException as exc:
            # Inputs read whole before the failure are committed, those that share a part with the
            # failing one's documents too; the failing one leaves nothing behind.
            if writer is not None and isinstance(exc, Exception) and not writer.failed:
                try:
                    writer.flush(upto=writer.current_start)
                    writer.hand_over()
                    writes.drain()
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    pass
            writes.abort()
            try:
                committer.commit()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
            for path in sorted(committer.uncommitted):
                location.remove(path)
            raise
        finally:
            writes.close()
            if ahead is not None:  # begun, never read
                ahead.close()

    report.n_docs_written = sum(w.n_docs_written for w in writers)
    report.n_duplicates = sum(w.n_duplicates for w in writers)
    report.n_text_bytes_written = sum(w.n_bytes_written for w in writers)
    report.n_parts_written = sum(len(w.written) for w in writers)
    report.bad_records = dict(bad_total)
    report.n_cross_shard_duplicates_removed = committer.n_rows_removed
    report.n_inputs_taken = committer.n_inputs_taken
    report.version = db.version
    report.n_id_parts_read, report.n_index_bytes_read = len(seen.parts_read), seen.bytes_read
    report.seconds = time.perf_counter() - started
    return report
