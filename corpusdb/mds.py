"""MosaicML's MDS shard format (`streaming.StreamingDataset` reads it), written without the package.

    python -c "from corpusdb.mds import encodings; import pyarrow as pa; print(encodings(pa.schema([('text', pa.string())])))"

An MDS shard is `num_samples` (uint32), `num_samples + 1` sample offsets (uint32, from the start of
the file), the shard's config as JSON, then the samples; a sample is the byte size (uint32) of each
column without a fixed size, then each column's bytes, the columns sorted by name. `index.json`
(version 2) lists the shards in order with their config. This is what `streaming.MDSWriter` writes
(`streaming/base/format/mds/writer.py`, version 0.13): the same bytes for the same samples, columns
and size limit, which the tests check against the real writer and reader.

Columns: `text` and the unit keys (`doc_id`, `instance_id`, `byte_start`, `byte_end`, `n_bytes`) in
their own encodings (`str`, `int64`); every other column as `json` (its value, or null; a whole
decimal, DuckDB's HUGEINT, as its integer), since a view's other columns may hold nulls, which MDS's
typed encodings cannot; `tokens` (with a tokenizer) as `ndarray:uint16` or `ndarray:uint32`, each
row's ids followed by EOS.
"""

from __future__ import annotations

import json
import struct
from decimal import Decimal

import numpy as np
import pyarrow as pa

KEYS = ("doc_id", "instance_id", "byte_start", "byte_end", "n_bytes")
OFFSET_LIMIT = 2**32  # sample offsets are uint32: a shard is smaller than 4 GiB
SHAPE_DTYPES = ((1 << 8, 0, "<u1"), (1 << 16, 1, "<u2"), (1 << 32, 2, "<u4"))  # NDArray's shape dtype codes


def encodings(schema: pa.Schema, tokens_dtype: np.dtype | None = None) -> dict[str, str]:
    """Each column's MDS encoding, sorted by name as MDSWriter stores them.

    Raises:
        ValueError: a key column has a type MDS cannot store, or `tokens` is both a column and asked for.
    """
    found: dict[str, str] = {}
    for field in schema:
        if field.name == "text" or (field.name in KEYS and _is_string(field.type)):
            found[field.name] = "str"
        elif field.name in KEYS and pa.types.is_integer(field.type):
            found[field.name] = "int64"
        elif field.name in KEYS:
            raise ValueError(f"column {field.name!r} is {field.type}; MDS stores a key as str or int64")
        else:
            found[field.name] = "json"
    if tokens_dtype is not None:
        if "tokens" in found:
            raise ValueError("the view has a column named 'tokens', which a tokenized MDS export writes; rename it")
        found["tokens"] = f"ndarray:{np.dtype(tokens_dtype).name}"
    return dict(sorted(found.items()))


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def shard_config(columns: dict[str, str], size_limit: int) -> bytes:
    """The config a shard carries after its offsets (MDSWriter.get_config, as JSON with sorted keys)."""
    return json.dumps(_config(columns, size_limit), sort_keys=True).encode()


def _config(columns: dict[str, str], size_limit: int) -> dict:
    return {"version": 2, "format": "mds", "compression": None, "hashes": [], "size_limit": size_limit,
            "column_names": list(columns), "column_encodings": list(columns.values()),
            "column_sizes": [8 if encoding == "int64" else None for encoding in columns.values()]}


def encode_samples(batch: pa.RecordBatch, columns: dict[str, str], tokens: list[np.ndarray] | None = None) -> list[bytes]:
    """Each row of `batch` as one MDS sample (the column sizes, then the columns' bytes).

    Raises:
        ValueError: a null in `text` or a key column.
    """
    encoded: list[list[bytes]] = []
    variable: list[bool] = []
    for name, encoding in columns.items():
        if name == "tokens" and tokens is not None:
            encoded.append([_ndarray(ids) for ids in tokens])
        else:
            column = batch.column(name)
            if encoding != "json" and column.null_count:
                raise ValueError(f"column {name!r} holds nulls; an MDS export needs text and keys in every row")
            if encoding == "str":
                encoded.append([value.encode() for value in column.to_pylist()])
            elif encoding == "int64":
                data = np.asarray(column.to_numpy(zero_copy_only=False), dtype="<i8").tobytes()
                encoded.append([data[i:i + 8] for i in range(0, len(data), 8)])
            else:  # the stdlib's json.dumps, as MDS's JSON encoding writes it (a whole decimal as its exact integer)
                try:
                    encoded.append([json.dumps(value, default=_whole).encode() for value in column.to_pylist()])
                except TypeError:
                    raise ValueError(f"column {name!r} is {column.type}, which MDS's json encoding cannot store; cast "
                                     "it in the view (e.g. to varchar) or leave it out") from None
        variable.append(encoding != "int64")
    sized = [values for values, is_variable in zip(encoded, variable) if is_variable]
    head = struct.Struct(f"<{len(sized)}I")
    return [head.pack(*(len(values[row]) for values in sized)) + b"".join(values[row] for values in encoded)
            for row in range(batch.num_rows)]


class ShardCut:
    """Where MDSWriter ends its shards (as `part_sink` cuts them), over rows without their text as they come: a sample
    goes into the open shard while the shard's bytes (its config, 8, and each sample with its offset, 4) stay within
    the size limit, and a shard's first sample always does. A row's text takes `n_bytes` (its UTF-8 length) in its
    sample, so a sharded export's plan cuts the parts into exactly the single process's shards without the text."""

    def __init__(self, columns: dict[str, str], limit: int):
        self.columns, self.limit = columns, limit
        self.base = 8 + len(shard_config(columns, limit))
        self.size, self.rows = self.base, 0

    @property
    def read(self) -> list[str]:
        """The columns `sizes` reads of a batch (every column of the samples but the text)."""
        return [name for name in self.columns if name != "text"]

    def sizes(self, batch: pa.RecordBatch) -> np.ndarray:
        """Each row's sample bytes: its columns' as `encode_samples` writes them, its text's `n_bytes`."""
        empty = pa.array([""] * batch.num_rows, pa.string())
        columns = {name: empty if name == "text" else batch.column(name) for name in self.columns}
        without = encode_samples(pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns)), self.columns)
        return np.fromiter(map(len, without), np.int64, len(without)) + batch.column("n_bytes").to_numpy(zero_copy_only=False)

    def end(self, sizes: np.ndarray) -> int:
        """How many of the next rows (of sample `sizes`) go into the open shard: more than there are where the shard
        goes on after them (it then holds them); the next shard starts after the rows returned."""
        running = self.size + np.cumsum(np.asarray(sizes, np.int64) + 4)
        fit = int(np.searchsorted(running, self.limit, side="right"))
        if fit == 0 and self.rows == 0 and len(sizes):
            fit = 1
        if fit == len(sizes):
            self.size, self.rows = int(running[-1]) if len(sizes) else self.size, self.rows + len(sizes)
            return len(sizes) + 1
        self.size, self.rows = self.base, 0
        return fit


def _whole(value):
    """A DuckDB HUGEINT (quota's running total: a decimal of scale 0) as JSON's integer; anything else unencodable."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise TypeError(type(value).__name__)


def _ndarray(ids: np.ndarray) -> bytes:
    """A 1-D array in MDS's NDArray encoding with its dtype given by the column: ndim and shape dtype, shape, values."""
    for bound, code, dtype in SHAPE_DTYPES:
        if len(ids) < bound:
            return bytes([(1 << 2) | code]) + np.array([len(ids)], dtype=dtype).tobytes() + ids.tobytes()
    raise ValueError(f"a row of {len(ids):,} tokens is too long for an MDS shard")


def shard_header(sizes: np.ndarray, config: bytes) -> bytes:
    """`num_samples`, the samples' offsets and the config: what precedes the samples in a shard."""
    start = 4 + 4 * (len(sizes) + 1) + len(config)
    offsets = start + np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    if offsets[-1] >= OFFSET_LIMIT:
        raise ValueError(f"an MDS shard of {int(offsets[-1]):,} bytes is over MDS's 4 GiB limit; pass a smaller --part-size-mb")
    return np.uint32(len(sizes)).tobytes() + offsets.astype("<u4").tobytes() + config


def index_entry(name: str, samples: int, size: int, columns: dict[str, str], size_limit: int) -> dict:
    """A shard's entry in `index.json`."""
    return {**_config(columns, size_limit), "raw_data": {"basename": name, "bytes": size, "hashes": {}},
            "samples": samples, "zip_data": None}


def index(entries: list[dict]) -> bytes:
    """`index.json`: the shards in order."""
    return json.dumps({"version": 2, "shards": entries}, sort_keys=True).encode()
