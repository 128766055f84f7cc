"""Read documents out of JSONL (plain, .gz, .zst, ...), Parquet and plain-text input files.

    python -c "from corpusdb.ingest.readers import *; print(ReadOptions())"

Readers yield batches of records (Arrow arrays of texts and meta values; `Reader.batches`), or
`(text, meta)` pairs one at a time. JSON lines are parsed by Arrow a block at a time where that
gives exactly what reading each line alone gives (`corpusdb.ingest.jsonl`). A bad record (malformed JSON, missing, null or non-string text
field, bytes that are not UTF-8) either raises `InputError` naming the file and line and the fix,
or, with `on_error="skip"`, is counted in `BadRecords` by reason and skipped. A damaged compressed
file (truncated, corrupt, or another compression than its name says) is one error naming the
line and byte reached; with skip, the records before the damage are kept and the file is counted
as `damaged_file`.

Lenient where the data is fine: a UTF-8 byte order mark before the first line is ignored, and a
number JSON allows but a double or a 64-bit integer cannot hold (1e400, 2**70) keeps its record:
its meta column gets the number as written (meta columns are text).
"""

from __future__ import annotations

import io
import lzma
import queue
import threading
import zlib
import posixpath
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from corpusdb.errors import InputError
from corpusdb.storage import resolve, storage_errors
from corpusdb.ingest.jsonl import BLOCK_BYTES, BOM, arrow_block, line_count, lookup, meta_value, records, split_lines, utf8_problem
from corpusdb.ingest.sources import InputFile

ON_ERROR = ("raise", "skip")
BATCH_RECORDS = 4096  # records of Parquet rows or JSON lines read one by one handed over at once
MAGIC = {b"\x1f\x8b": ("gzip", ".gz"), b"BZh": ("bz2", ".bz2"), b"\xfd7zXZ\x00": ("xz", ".xz"),
         b"\x28\xb5\x2f\xfd": ("zstd", ".zst")}
SPECIAL_FIELDS = ("@file", "@line")
SKIP_HINT = "or pass --on-error skip to skip and count bad records"


@dataclass(frozen=True)
class ReadOptions:
    """How to find the text and metadata in each record."""

    text_field: str = "text"
    meta: tuple[tuple[str, str], ...] = ()  # (column, field path or @file/@line)
    on_error: str = "raise"

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error {self.on_error!r} is not one of {', '.join(ON_ERROR)}")
        reserved = {"doc_id", "source", "text", "n_bytes"}
        for column, _ in self.meta:
            if column in reserved or not column.isidentifier():
                raise ValueError(f"meta column {column!r} must be an identifier other than {', '.join(sorted(reserved))}")


@dataclass
class BadRecords:
    """Counts of skipped bad records by reason, and the first few messages as examples."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Batch:
    """Records of one input, in order: their texts and, per meta column, their values (Arrow strings)."""

    texts: pa.Array
    meta: dict[str, pa.Array]

    @classmethod
    def of(cls, texts: list[str], meta: dict[str, list]) -> Batch:
        return cls(pa.array(texts, pa.string()), {column: pa.array(values, pa.string()) for column, values in meta.items()})

    def __len__(self) -> int:
        return len(self.texts)


class PrefetchReader(io.RawIOBase):
    """Opens and reads the raw (compressed) input ahead in a background thread; counts the bytes handed out.

    Network reads release the GIL, so fetching the next chunk overlaps with parsing this one, and a
    reader made before its turn (`Reader.start`) has its first chunks ready when parsing reaches it.
    Errors, the opening's included, are raised in the reading thread at the first read.
    """

    def __init__(self, open_raw: Callable[[], io.IOBase], on_bytes: Callable[[int], None], chunk: int = 8 << 20, depth: int = 2):
        self._raw: io.IOBase | None = None
        self._on_bytes = on_bytes
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._fill, args=(open_raw, chunk), daemon=True)
        self._thread.start()

    def _fill(self, open_raw: Callable[[], io.IOBase], chunk: int) -> None:
        try:
            self._raw = open_raw()
            while not self._stop.is_set():
                data = self._raw.read(chunk)
                self._queue.put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reading thread
            self._queue.put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._current and not self._done:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                self._done = True
            self._current = memoryview(item)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        self._on_bytes(n)
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            while self._thread.is_alive():  # unblock a filler waiting on a full queue
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            if self._raw is not None:
                self._raw.close()
        super().close()


def _compression_of(head: bytes) -> tuple[str, str] | None:
    return next((found for magic, found in MAGIC.items() if head.startswith(magic)), None)


class ZstdFrames(io.RawIOBase):
    """Decompresses concatenated zstd frames from a stream, and says so when the stream ends inside
    a frame (a truncated file), which zstandard's stream reader passes over silently."""

    def __init__(self, raw: io.IOBase):
        self._raw = raw
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._pending = b""
        self._inside = False  # fed bytes of a frame that has not ended
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._done:
            chunk = self._raw.read(1 << 20)
            if not chunk:
                self._done = True
                if self._inside:
                    raise EOFError("the file ends inside a zstd frame")
                break
            out = []
            while chunk:
                self._inside = True
                out.append(self._frame.decompress(chunk))
                if not self._frame.eof:
                    break
                chunk, self._inside = self._frame.unused_data, False
                self._frame = self._decompressor.decompressobj()
            self._pending = b"".join(out)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class Reader:
    """Reads one input file into `(text, meta)` records, handling bad records per `ReadOptions`."""

    def __init__(self, item: InputFile, options: ReadOptions, storage_options: dict, on_bytes: Callable[[int], None]):
        self.item = item
        self.options = options
        self.bad = BadRecords()
        self.fs, _ = resolve(item.url, storage_options)
        # the size from the listing: without it s3fs looks the file up in its cached listing of the
        # folder, a scan of every entry per file (quadratic over 100k files)
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        self._open_options = {} if protocol in ("file", "local") else {"size": item.size}
        self.bytes_read = 0  # of the file as stored (compressed), so far
        self._line = 0  # lines read whole so far
        self._meta_paths = [path for _, path in options.meta if path not in SPECIAL_FIELDS]
        # JSON lines go to Arrow a block at a time where every field asked for is a top-level one
        plain = "." not in options.text_field and not any("." in path for path in self._meta_paths)
        self._arrow_fields = tuple(dict.fromkeys(self._meta_paths)) if plain else None

        def counted(n: int) -> None:
            self.bytes_read += n
            on_bytes(n)

        self._on_bytes = counted
        self._handle: io.BufferedIOBase | None = None
        self._prefetch: PrefetchReader | None = None

    def start(self) -> None:
        """Begin fetching the input in the background now, before it is iterated (JSONL and text inputs)."""
        if self._handle is None and self.item.format != "parquet":
            self._handle = self._open()

    def close(self) -> None:
        """Stop the background fetch and close the input: after iterating, or where `start` began one never iterated."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._prefetch is not None:  # a decompressor's close leaves the file it reads open
            self._prefetch.close()
            self._prefetch = None

    def _bad(self, reason: str, where: str, problem: str, fix: str) -> None:
        location = f"{self.item.url} {where}" if where else self.item.url
        message = f"{location}: {problem}; {fix}"
        if self.options.on_error == "raise":
            raise InputError(f"{message} {SKIP_HINT}")
        self.bad.add(reason, message)

    def _open_raw(self) -> io.IOBase:
        with storage_errors(self.item.url, self.fs):
            return self._with_details(self.fs.open(self.item.path, "rb", block_size=16 << 20, **self._open_options))

    def _with_details(self, handle):
        """Give an object-store file its entry from the listing (size, ETag): reads then need no
        lookup of their own, which in fsspec's listing cache is a scan of the whole folder per file,
        and s3fs reads exactly the listed version (If-Match on the ETag)."""
        if self._open_options and self.item.details and hasattr(type(handle), "details"):
            handle.details = self.item.details
        return handle

    def _open(self) -> io.BufferedIOBase:
        if self._handle is not None:  # begun by start()
            handle, self._handle = self._handle, None
            return handle
        self._prefetch = PrefetchReader(self._open_raw, self._on_bytes)
        counted = io.BufferedReader(self._prefetch, buffer_size=1 << 20)
        if self.item.compression is None:
            return counted
        if self.item.compression == "zstd":  # streaming: fsspec's wrapper wants a seekable file
            return io.BufferedReader(ZstdFrames(counted), buffer_size=1 << 20)
        return fsspec.compression.compr[self.item.compression](counted, mode="rb")

    def batches(self) -> Iterator[Batch]:
        """The input's good records, in order, a batch at a time."""
        reader = {"jsonl": self._jsonl, "parquet": self._parquet, "arrow": self._arrow, "text": self._text}[self.item.format]
        if self.item.compression is not None and (self.item.details or {}).get("size") == 0:  # a listed size, not unknown
            # an empty file is no valid compressed file (even an empty text compresses to a header):
            # a download that never happened, not an input without records
            self._bad("empty_file", "", f"empty {self.item.compression} file (0 bytes): not valid {self.item.compression} data",
                      "download or copy it again")
            self.close()
            return
        try:
            with storage_errors(self.item.url, self.fs):
                yield from reader()
        finally:
            self.close()

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        """The input's good records one at a time: (text, {meta column: value})."""
        for batch in self.batches():
            meta = {column: values.to_pylist() for column, values in batch.meta.items()}
            for i, text in enumerate(batch.texts.to_pylist()):
                yield text, {column: values[i] for column, values in meta.items()}

    def _meta(self, record: dict, number: int) -> dict:
        """Meta column values of one record (`number` is its line or row)."""
        values = {}
        for column, path in self.options.meta:
            if path == "@file":
                values[column] = self.item.url
            elif path == "@line":
                values[column] = str(number)
            else:
                values[column] = meta_value(lookup(record, path))
        return values

    def _batched(self, found: Iterator[tuple[int, str, dict]]) -> Iterator[Batch]:
        """Batches of BATCH_RECORDS records from (number, text, record) triples."""
        texts: list[str] = []
        meta: dict[str, list] = {column: [] for column, _ in self.options.meta}
        for number, text, record in found:
            texts.append(text)
            for column, value in self._meta(record, number).items():
                meta[column].append(value)
            if len(texts) >= BATCH_RECORDS:
                yield Batch.of(texts, meta)
                texts, meta = [], {column: [] for column in meta}
        if texts:
            yield Batch.of(texts, meta)

    def _damaged(self, exc: BaseException, lines: int) -> bool:
        """Report a damaged compressed input (raise, or count it with skip); False if `exc` is not that."""
        compression = self.item.compression
        if compression is None or not (
            isinstance(exc, (EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError))
            or (isinstance(exc, OSError) and ("Not a gzipped file" in str(exc) or "Invalid data stream" in str(exc)))
        ):
            return False
        where = f"after line {lines:,} ({self.bytes_read:,} of {self.item.size:,} bytes read)"
        if isinstance(exc, EOFError):
            problem, fix = f"truncated {compression} file: it ends before its compressed data does", \
                "download or copy it again"
        else:
            problem, fix = f"damaged {compression} data ({str(exc).strip() or type(exc).__name__})", "repair or replace the file"
            actual = self._sniff()
            if actual and actual[0] != compression:
                problem = f"not {compression} data: the file starts like {actual[0]}"
                fix = f"rename it to end in {actual[1]} instead of {posixpath.splitext(self.item.name)[1]}"
            elif actual is None and lines == 0:
                problem = f"not {compression} data: the file does not start like any compression corpusdb reads"
                fix = "check the file, or rename it without the compression extension if it is plain"
        if self.options.on_error == "raise":
            raise InputError(f"{self.item.url} {where}: {problem}; {fix}, or pass --on-error skip to keep the records "
                             "before the damage") from None
        self.bad.add("damaged_file", f"{self.item.url} {where}: {problem}")
        return True

    def _sniff(self) -> tuple[str, str] | None:
        try:
            with storage_errors(self.item.url, self.fs), self.fs.open(self.item.path, "rb") as handle:
                return _compression_of(handle.read(8))
        except Exception:  # noqa: BLE001 - only a hint for a message
            return None

    def _jsonl(self) -> Iterator[Batch]:
        try:
            yield from self._jsonl_blocks()
        except Exception as exc:
            if not self._damaged(exc, self._line):
                raise

    def _jsonl_blocks(self) -> Iterator[Batch]:
        """Blocks of whole lines (BLOCK_BYTES), each parsed by Arrow or, where Arrow's answer might
        differ, line by line (`corpusdb.ingest.jsonl`). A read that fails (damaged compressed data)
        first gives the records of the whole lines before it."""
        self._line = 0  # lines read whole so far: an error in reading comes after them
        pending = bytearray()
        with self._open() as handle:
            while True:
                try:
                    chunk = handle.read1(1 << 20)  # one read of the stream: what came before an error is kept
                except Exception:
                    yield from self._block(bytes(pending[: pending.rfind(b"\n") + 1]))
                    raise
                if chunk:
                    pending += chunk
                    # the last newline is in this chunk or was there when the block was still short: look in
                    # the chunk only, so a line of any length costs one pass
                    if len(pending) < BLOCK_BYTES or (cut := pending.rfind(b"\n", len(pending) - len(chunk)) + 1) == 0:
                        continue
                else:
                    cut = len(pending)
                with memoryview(pending) as view:  # one copy of the block (a bytearray's slice is a copy too)
                    data = bytes(view[:cut])
                del pending[:cut]
                yield from self._block(data)
                if not chunk:
                    return

    def _block(self, data: bytes) -> Iterator[Batch]:
        """The records of a block of whole lines that follows line `self._line`."""
        if not data:
            return
        first = self._line + 1
        if first == 1 and data.startswith(BOM):
            data = data[len(BOM):]
        n_lines = line_count(data)
        table = None
        if self._arrow_fields is not None:
            table = arrow_block(data, n_lines, self.options.text_field, self._arrow_fields)
        if table is None:
            found = records(split_lines(data), first, self.options.text_field, self._meta_paths, self._bad)
            yield from self._batched(found)
        else:
            meta = {}
            for column, path in self.options.meta:
                if path == "@file":
                    meta[column] = pa.array([self.item.url] * table.num_rows, pa.string())
                elif path == "@line":
                    meta[column] = pa.array([str(first + row) for row in range(table.num_rows)], pa.string())
                else:
                    meta[column] = table.column(path).combine_chunks()
            yield Batch(table.column(self.options.text_field).combine_chunks(), meta)
        self._line += n_lines

    def _parquet(self) -> Iterator[Batch]:
        with storage_errors(self.item.url, self.fs):
            handle = self._with_details(self.fs.open(self.item.path, "rb", **self._open_options))
        with handle:
            try:
                parquet = pq.ParquetFile(handle)
            except (pa.ArrowInvalid, OSError) as exc:  # a truncated or damaged file: no footer to read
                self._bad("damaged_file", "", f"not a readable Parquet file ({_first_line(exc)})", "download or copy it again")
                return
            yield from self._columns(parquet.schema_arrow,
                                     lambda columns: parquet.iter_batches(columns=columns, batch_size=BATCH_RECORDS))
        self._on_bytes(self.item.size)

    def _arrow(self) -> Iterator[Batch]:
        """Arrow IPC: the stream format `datasets.Dataset.save_to_disk` writes (read as it streams in), or the file format."""
        handle = self._open()
        try:
            try:
                reader = pa.ipc.open_stream(handle)
            except pa.ArrowInvalid:
                handle.close()
                with storage_errors(self.item.url, self.fs):
                    handle = self._with_details(self.fs.open(self.item.path, "rb", **self._open_options))
                try:
                    reader = pa.ipc.open_file(handle)
                except (pa.ArrowInvalid, OSError) as exc:
                    self._bad("damaged_file", "", f"not a readable Arrow IPC stream or file ({_first_line(exc)})",
                              "download or copy it again")
                    return
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                batches = iter(reader)
            try:
                yield from self._columns(reader.schema, lambda columns: (b.select(columns) for b in batches))
            except (pa.ArrowInvalid, OSError) as exc:  # a stream cut short
                self._bad("damaged_file", "", f"Arrow IPC data ends early or is damaged ({_first_line(exc)})",
                          "download or copy it again")
        finally:
            handle.close()

    def _columns(self, schema: pa.Schema, read: Callable[[list[str]], Iterator[pa.RecordBatch]]) -> Iterator[Batch]:
        """Batches of a columnar input (Parquet, Arrow) given its schema and a reader of the named columns."""
        text_field = self.options.text_field
        names = schema.names
        top = {path.split(".")[0] for _, path in self.options.meta if path not in SPECIAL_FIELDS}
        wanted = [text_field, *sorted(top - {text_field})]
        missing = [name for name in wanted if name not in names]
        if text_field in missing:
            raise InputError(
                f"{self.item.url}: no column {text_field!r} (columns: {', '.join(names[:8])}); "
                "name the text column with --text-field"
            )
        columns = [name for name in wanted if name in names]
        row = 0
        simple = all(path in SPECIAL_FIELDS or path in names and pa.types.is_string(schema.field(path).type)
                     for _, path in self.options.meta)
        for batch in read(columns):
            column = batch.column(text_field)
            if simple and column.null_count == 0 and column.type in (pa.string(), pa.large_string()):
                # every text a string, every meta field a string column: the batch as it is
                meta = {name: (pa.array([self.item.url if path == "@file" else str(row + 1 + i)
                                         for i in range(batch.num_rows)], pa.string())
                               if path in SPECIAL_FIELDS else batch.column(path))
                        for name, path in self.options.meta}
                row += batch.num_rows
                yield Batch(column, meta)
                continue
            texts = column.to_pylist()
            rows = batch.select(sorted(top & set(columns))).to_pylist() if top else None
            found = []
            for i, text in enumerate(texts):
                row += 1
                if not isinstance(text, str):
                    problem = "is null" if text is None else f"is {type(text).__name__}, not a string"
                    self._bad("wrong_type", f"row {row}", f"column {text_field!r} {problem}", "clean the column")
                    continue
                found.append((row, text, rows[i] if rows else {}))
            yield from self._batched(iter(found))

    def _text(self) -> Iterator[Batch]:
        try:
            with self._open() as handle:
                data = handle.read()
        except Exception as exc:
            if self._damaged(exc, 0):
                return
            raise
        data = data.removeprefix(BOM)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._bad("not_utf8", "", utf8_problem(data) or "not valid UTF-8", "re-encode the file as UTF-8")
            return
        yield Batch.of([text], {column: [value] for column, value in self._meta({}, 1).items()})


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
