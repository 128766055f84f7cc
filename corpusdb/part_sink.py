"""An export's parts in one format, streamed batch by batch: Parquet, JSONL, token arrays (tokens, Megatron,
datatrove) and MDS shards; each file recorded in the export's journal before it is written.

    python -c "from corpusdb.part_sink import part_files; print(part_files('megatron', 0, 'abcd1234'))"
"""

from __future__ import annotations

import contextlib
import decimal
import shutil
import struct
import tempfile

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusdb import failpoint, mds
from corpusdb.errors import ExportError
from corpusdb.export_base import claim, slices, tokenize
from corpusdb.storage import Location

TOKENIZED = ("tokens", "megatron", "datatrove")  # need a tokenizer (mds and litdata take one: a `tokens` column)
MEGATRON_HEADER = b"MMIDIDX\x00\x00"  # Megatron-LM's indexed dataset (.idx), version 1
MEGATRON_DTYPES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}  # megatron.core.datasets.indexed_dataset.DType
ROW_GROUP_ROWS, ROW_GROUP_BYTES = 65536, 32 * 1024 * 1024  # a Parquet part's row groups: rows, or bytes of text
WRITE_BATCH_ROWS = 1024  # the rows Arrow's Parquet writer takes at a time (its default, set explicitly)


def aligned(batches: list[pa.RecordBatch], step: int = WRITE_BATCH_ROWS) -> pa.Table:
    """The rows of `batches` as a table whose chunks all start at multiples of `step` rows.

    Arrow's Parquet writer takes a column chunk by chunk, `step` rows at a time, and after each
    step checks its dictionary's size (falling back to plain pages) and its page's: so a row
    group's bytes depend on where its chunks begin. Aligned, they are the same however the rows
    came (a sharded export's batches end where its plan's slices do, one process's where DuckDB's
    do). Only the `step` rows around a place where two batches meet are copied; the rest are
    slices of the batches.
    """
    offsets = np.cumsum([0, *(b.num_rows for b in batches)])
    chunks, start, total = [], 0, int(offsets[-1])
    table = None
    while start < total:
        i = int(np.searchsorted(offsets, start, side="right")) - 1  # the batch that holds row `start`
        end = int(offsets[i + 1]) // step * step
        if end > start:  # whole steps inside one batch
            chunks.append(batches[i].slice(start - int(offsets[i]), end - start))
        else:  # the step where batches meet, copied into one chunk
            end = min(start + step, total)
            table = pa.Table.from_batches(batches) if table is None else table
            chunks.append(table.slice(start, end - start).combine_chunks().to_batches()[0])
        start = end
    return pa.Table.from_batches(chunks, schema=batches[0].schema)


def _json_number(value: object) -> orjson.Fragment:
    """A DECIMAL or HUGEINT value (quota's running total) as its exact number: DuckDB hands them over as Decimal."""
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return orjson.Fragment(str(value))
    raise TypeError(f"a {type(value).__name__} value cannot be written as JSON; cast the column in the view")


def load_tokenizer(name: str):
    """A tokenizer (folder, .gguf file or hub id) with an EOS token, which ends every exported document."""
    from corpusdb.scoring.model import load_tokenizer as load

    return load(name, need_eos=True)


def part_files(fmt: str, index: int, key: str) -> dict[str, str]:
    """The files of export part `index` (`file`, and `index`, `metadata`, `prefix` where the format has them)."""
    if fmt in ("parquet", "jsonl"):
        return {"file": f"part-{index:05d}-{key}.{fmt}"}
    if fmt == "mds":
        return {"file": f"mds-{index:05d}-{key}.mds"}
    prefix = f"{fmt}-{index:05d}-{key}"
    names = {"tokens": (f"{prefix}.bin", f"{prefix}.idx.parquet"), "megatron": (f"{prefix}.bin", f"{prefix}.idx"),
             "datatrove": (f"{prefix}.ds", f"{prefix}.ds.index", f"{prefix}.ds.metadata")}[fmt]
    return {**dict(zip(("file", "index", "metadata"), names)), **({"prefix": prefix} if fmt != "tokens" else {})}


class PartSink:
    """Streams record batches into numbered parts in one format, each file recorded in the journal first.

    A part is open from its first batch (`add`) to `finish`: its files are written as the batches
    come (Parquet row groups, JSON lines, token ids) and published atomically at the end, so memory
    holds a batch and a row group, never a whole part.
    """

    def __init__(self, out: Location, fmt: str, key: str, journal: dict | None, tokenizer=None, part_bytes: int = 0,
                 first_index: int = 0):
        self.out, self.fmt, self.key, self.journal, self.tokenizer = out, fmt, key, journal, tokenizer
        self.part_bytes, self.first_index = part_bytes, first_index
        self.parts: list[dict] = []
        self.shards: list[dict] = []  # mds: each part's entry in index.json
        self._stack: contextlib.ExitStack | None = None
        if tokenizer is not None:
            # Megatron-LM reads uint16 or int32 token ids (no uint32)
            self.dtype = np.uint16 if len(tokenizer) <= 65536 else (np.int32 if fmt == "megatron" else np.uint32)

    def _claim(self, *names: str) -> None:
        if self.journal is not None:  # None: a shard of a sharded export, whose driver claimed every name first
            claim(self.out, self.journal, *names)

    def _open(self, schema: pa.Schema) -> None:
        entry = self._entry = {"rows": 0, "bytes": 0, **part_files(self.fmt, self.first_index + len(self.parts), self.key)}
        names = [entry[key] for key in ("file", "index", "metadata") if key in entry]
        self._claim(*names)
        self._stack = contextlib.ExitStack()
        if self.fmt == "parquet":
            self._file = self._stack.enter_context(self.out.open_atomic(entry["file"]))
            self._writer = pq.ParquetWriter(self._file, schema, compression="zstd", write_batch_size=WRITE_BATCH_ROWS)
            self._group: list[pa.RecordBatch] = []
            self._group_rows = self._group_bytes = 0
            return
        if self.fmt == "mds":  # the samples wait in a local file: the shard's header comes first and counts them
            self._columns = mds.encodings(schema, self.dtype if self.tokenizer is not None else None)
            self._config = mds.shard_config(self._columns, self.part_bytes)
            self._cut = mds.ShardCut(self._columns, self.part_bytes)  # MDSWriter's rule (a sharded export's plan's too)
            self._samples = self._stack.enter_context(tempfile.TemporaryFile())
            self._sizes: list[int] = []
            self._lengths = []
            return
        if self.fmt != "jsonl":
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
                self._file.write(b"".join(orjson.dumps(row, default=_json_number) + b"\n" for row in piece.to_pylist()))
        else:
            for piece in slices(batch):
                flat, lengths = tokenize(self.tokenizer, piece, self.dtype)
                self._file.write(flat.astype(np.dtype(self.dtype).newbyteorder("<")).tobytes())
                self._lengths.append(lengths)
            for name, arrays in self._keys.items():
                arrays.append(batch.column(name))

    def _add_samples(self, batch: pa.RecordBatch) -> None:
        """MDS: rows as samples into shards cut as MDSWriter cuts them (`mds.ShardCut`: a sample that would take the
        shard past the size limit, its bytes and 4 per sample, starts the next one), so the shards are MDSWriter's own."""
        for piece in slices(batch):
            tokens = lengths = None
            if self.tokenizer is not None:
                flat, lengths = tokenize(self.tokenizer, piece, self.dtype)
                tokens = np.split(flat.astype(np.dtype(self.dtype).newbyteorder("<")), np.cumsum(lengths)[:-1])
            if self._stack is None:
                self._open(piece.schema)
            try:
                samples = mds.encode_samples(piece, self._columns, tokens)
            except ValueError as exc:
                raise ExportError(str(exc)) from None
            n_bytes = piece.column("n_bytes").to_numpy(zero_copy_only=False)
            sizes = np.fromiter(map(len, samples), np.int64, len(samples))
            start = 0
            while start < len(samples):
                if self._stack is None:
                    self._open(piece.schema)
                cut = self._cut.end(sizes[start:])
                end = start + min(cut, len(samples) - start)
                self._samples.write(b"".join(samples[start:end]))
                self._sizes += map(len, samples[start:end])
                self._entry["rows"] += end - start
                self._entry["bytes"] += int(n_bytes[start:end].sum())
                if lengths is not None:
                    self._lengths.append(lengths[start:end])
                if cut <= len(samples) - start:  # the next sample starts the next shard
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
            self._writer.write_table(aligned(self._group), row_group_size=ROW_GROUP_ROWS)
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

    def dataset_index(self) -> bytes | None:
        """MDS: `index.json`, the shards in order (None for the other formats)."""
        return mds.index(self.shards) if self.fmt == "mds" else None
