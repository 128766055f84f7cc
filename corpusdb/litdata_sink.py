"""LitData's chunk format (`litdata.StreamingDataset` reads it), written by the package's own writer.

    corpusdb export demo/db dedup out/dedup-litdata --format litdata

`litdata.streaming.writer.BinaryWriter` serializes each row (a dict of its keys, `doc_id` and for
instances `instance_id`, `byte_start`, `byte_end`, then `text`, `n_bytes` and, with a tokenizer,
`tokens`: the row's ids followed by EOS) into chunks of `part_size_mb` in a local staging
folder; each chunk is published into the export as `litdata-NNNNN-<key>.bin` as soon as it is
written, and `index.json` (the chunks in order and the writer's config) comes last, with
`updated_at` set to the export's key so LitData's cache of a remote export follows its content.

The view's other columns are not written: LitData 0.2.76's writer infers each column's type from
the values it sees and gave back '' for some nulls of a string column (a column whose first rows
were null); the keys, text and sizes are never null. Export parquet or mds for every column.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa

from corpusdb import failpoint
from corpusdb.errors import ExportError
from corpusdb.export_base import claim, slices, tokenize
from corpusdb.storage import Location

COLUMNS = ("doc_id", "instance_id", "byte_start", "byte_end", "text", "n_bytes")


class LitDataSink:
    """The export's part sink for `--format litdata` (the interface of `corpusdb.part_sink.PartSink`)."""

    def __init__(self, out: Location, key: str, journal: dict, tokenizer=None, part_bytes: int = 0):
        try:
            from litdata.streaming.writer import BinaryWriter
        except ImportError as exc:
            raise ExportError(f"--format litdata needs the litdata package ({exc}); pip install 'corpusdb[litdata]'") from None
        self.out, self.key, self.journal, self.tokenizer = out, key, journal, tokenizer
        self.parts: list[dict] = []
        if tokenizer is not None:
            self.dtype = np.uint16 if len(tokenizer) <= 65536 else np.uint32
        self._staging = tempfile.mkdtemp(prefix="corpusdb-litdata-")
        self._writer = BinaryWriter(self._staging, chunk_bytes=part_bytes)
        self._rows = 0
        self._n_bytes: list[np.ndarray] = []  # per row, to count each chunk's text bytes in the manifest
        self._lengths: list[np.ndarray] = []  # tokens per row
        self._chunks: dict[str, str] = {}  # the writer's chunk file -> its name in the export
        self._done = False

    @property
    def open(self) -> bool:
        return not self._done

    def add(self, batch: pa.RecordBatch) -> None:
        for piece in slices(batch):
            rows = piece.select([name for name in COLUMNS if name in piece.schema.names]).to_pylist()
            if self.tokenizer is not None:
                flat, lengths = tokenize(self.tokenizer, piece, self.dtype)
                for row, ids in zip(rows, np.split(flat, np.cumsum(lengths)[:-1])):
                    row["tokens"] = ids
                self._lengths.append(lengths)
            self._n_bytes.append(piece.column("n_bytes").to_numpy(zero_copy_only=False).astype(np.int64))
            for row in rows:
                written = self._writer.add_item(self._rows, row)
                self._rows += 1
                if written:
                    self._publish(written)

    def _publish(self, path: str) -> None:
        """Move a chunk the writer wrote into the export (its name recorded in the journal first)."""
        name = f"litdata-{len(self._chunks):05d}-{self.key}.bin"
        claim(self.out, self.journal, name)
        with self.out.open_atomic(name) as target, open(path, "rb") as source:
            shutil.copyfileobj(source, target, 8 * 1024 * 1024)
        os.remove(path)
        self._chunks[os.path.basename(path)] = name
        failpoint.after_part("export", len(self._chunks))

    def finish(self, schema: pa.Schema | None = None) -> None:
        """The last chunks, then the parts as LitData's index counts them."""
        for path in self._writer.done():
            self._publish(path)
        self._done = True
        written = [f for f in os.listdir(self._staging) if f.endswith(".index.json")]
        chunks, self._config = [], None
        if written:
            with open(os.path.join(self._staging, written[0]), encoding="utf-8") as index:
                data = json.load(index)
            chunks, self._config = data["chunks"], data["config"]
        sizes = np.concatenate(self._n_bytes) if self._n_bytes else np.empty(0, np.int64)
        lengths = np.concatenate(self._lengths) if self._lengths else None
        self._index_chunks, start = [], 0
        for chunk in chunks:
            name, rows = self._chunks[chunk["filename"]], int(chunk["chunk_size"])
            part = {"file": name, "rows": rows, "bytes": int(sizes[start:start + rows].sum())}
            if lengths is not None:
                part["tokens"] = int(lengths[start:start + rows].sum())
            self.parts.append(part)
            self._index_chunks.append({**chunk, "filename": name})
            start += rows
        self.close()

    def dataset_index(self) -> bytes:
        """`index.json`: the chunks in order and the writer's config."""
        return json.dumps({"chunks": self._index_chunks, "config": self._config, "updated_at": self.key},
                          sort_keys=True).encode()

    def abort(self) -> None:
        self._done = True
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            shutil.rmtree(self._staging)
