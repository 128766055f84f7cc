"""Read documents out of JSONL (plain, .gz, .zst, ...), Parquet and plain-text input files.

    python -c "from corpusdb.ingest.readers import *; print(ReadOptions())"

Readers yield `(text, meta)` pairs. A bad record (malformed JSON, missing, null or non-string text
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
import json
import lzma
import math
import queue
import threading
import zlib
import posixpath
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import fsspec
import orjson
import pyarrow.parquet as pq
import zstandard

from corpusdb.errors import InputError
from corpusdb.storage import resolve, storage_errors
from corpusdb.ingest.sources import InputFile

ON_ERROR = ("raise", "skip")
BOM = b"\xef\xbb\xbf"
MAGIC = {b"\x1f\x8b": ("gzip", ".gz"), b"BZh": ("bz2", ".bz2"), b"\xfd7zXZ\x00": ("xz", ".xz"),
         b"\x28\xb5\x2f\xfd": ("zstd", ".zst")}
_MISSING = object()
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


def _lookup(record: dict, path: str, missing: object = None) -> object:
    value: object = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return missing
        value = value[key]
    return value


class _Number(str):
    """A JSON number no double or 64-bit integer holds, kept as written."""


def _meta_value(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits, alone or inside a list or object
        return json.dumps(value, default=str, separators=(",", ":"))  # as compact as orjson's


def _float_or_text(literal: str) -> float | str:
    number = float(literal)
    return number if math.isfinite(number) else _Number(literal)


def _int_or_text(literal: str) -> int | str:
    number = int(literal)
    return number if -(2**63) <= number < 2**64 else _Number(literal)


def _loads_lenient(line: bytes) -> object:
    """Parse a line orjson refused only for a number it cannot hold; raise ValueError otherwise."""
    return json.loads(line, parse_float=_float_or_text, parse_int=_int_or_text,
                      parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} is not JSON")))


def _rounded_integer(value: object) -> bool:
    """Whether orjson may have parsed an integer beyond 64 bits into a float (it does so silently)."""
    if isinstance(value, float):
        return value.is_integer() and abs(value) >= 2**63
    if isinstance(value, list):
        return any(_rounded_integer(v) for v in value)
    if isinstance(value, dict):
        return any(_rounded_integer(v) for v in value.values())
    return False


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


def _utf8_problem(data: bytes) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
    return None


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

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        reader = {"jsonl": self._jsonl, "parquet": self._parquet, "text": self._text}[self.item.format]
        try:
            with storage_errors(self.item.url, self.fs):
                yield from reader()
        finally:
            self.close()

    def _meta(self, record: dict, number: int) -> dict:
        """Meta column values of one record (`number` is its line or row)."""
        values = {}
        for column, path in self.options.meta:
            if path == "@file":
                values[column] = self.item.url
            elif path == "@line":
                values[column] = str(number)
            else:
                values[column] = _meta_value(_lookup(record, path))
        return values

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

    def _jsonl(self) -> Iterator[tuple[str, dict]]:
        try:
            yield from self._jsonl_lines()
        except Exception as exc:
            if not self._damaged(exc, self._line):
                raise

    def _jsonl_lines(self) -> Iterator[tuple[str, dict]]:
        text_field = self.options.text_field
        self._line = 0
        with self._open() as handle:
            for number, line in enumerate(handle, start=1):
                self._line = number  # an error in reading the next line comes after this one
                if number == 1 and line.startswith(BOM):
                    line = line[len(BOM):]
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    problem = _utf8_problem(line)
                    if problem:
                        self._bad("not_utf8", f"line {number}", problem, "re-encode the file as UTF-8")
                        continue
                    try:  # a number orjson cannot hold (1e400, 2**70) is still JSON
                        record = _loads_lenient(line)
                    except ValueError:
                        self._bad("malformed_json", f"line {number}", f"malformed JSON ({exc})", "fix the line")
                        continue
                if not isinstance(record, dict):
                    self._bad("malformed_json", f"line {number}", "not a JSON object", "write one object per line")
                    continue
                if any(_rounded_integer(_lookup(record, path)) for path in self._meta_paths):
                    record = _loads_lenient(line)  # keep the integer's digits, as text
                text = _lookup(record, text_field, _MISSING)
                if text is _MISSING:
                    fields = ", ".join(list(record)[:8])
                    self._bad(
                        "missing_field",
                        f"line {number}",
                        f"no field {text_field!r} (fields: {fields})",
                        "name the text field with --text-field",
                    )
                    continue
                if text is None:
                    self._bad("null_text", f"line {number}", f"field {text_field!r} is null",
                              "give every record a text, or name another field with --text-field")
                    continue
                if not isinstance(text, str):
                    self._bad(
                        "wrong_type",
                        f"line {number}",
                        f"field {text_field!r} is {type(text).__name__}, not a string",
                        "name a string field with --text-field",
                    )
                    continue
                yield text, self._meta(record, number)

    def _parquet(self) -> Iterator[tuple[str, dict]]:
        text_field = self.options.text_field
        with storage_errors(self.item.url, self.fs):
            handle = self._with_details(self.fs.open(self.item.path, "rb", **self._open_options))
        with handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
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
            for batch in parquet.iter_batches(columns=columns, batch_size=4096):
                for record in batch.to_pylist():
                    row += 1
                    text = record.get(text_field)
                    if not isinstance(text, str):
                        problem = "is null" if text is None else f"is {type(text).__name__}, not a string"
                        self._bad("wrong_type", f"row {row}", f"column {text_field!r} {problem}", "clean the column")
                        continue
                    yield text, self._meta(record, row)
        self._on_bytes(self.item.size)

    def _text(self) -> Iterator[tuple[str, dict]]:
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
            self._bad("not_utf8", "", _utf8_problem(data) or "not valid UTF-8", "re-encode the file as UTF-8")
            return
        yield text, self._meta({}, 1)
