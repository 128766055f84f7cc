"""Read documents out of JSONL (plain, .gz, .zst, ...), Parquet and plain-text input files.

    python -c "from ingest.readers import *; print(ReadOptions())"

Readers yield `(text, meta)` pairs. A bad record (malformed JSON, missing or non-string text field,
bytes that are not UTF-8) either raises `InputError` naming the file and line and the fix, or, with
`on_error="skip"`, is counted in `BadRecords` by reason and skipped.
"""

from __future__ import annotations

import io
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import fsspec
import orjson
import pyarrow.parquet as pq
import zstandard

from corpusdb.errors import InputError
from corpusdb.storage import resolve, storage_errors
from ingest.sources import InputFile

ON_ERROR = ("raise", "skip")
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


def _lookup(record: dict, path: str) -> object:
    value: object = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _meta_value(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


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
        self._on_bytes = on_bytes
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
        with storage_errors(self.item.url):
            return self.fs.open(self.item.path, "rb", block_size=16 << 20)

    def _open(self) -> io.BufferedIOBase:
        if self._handle is not None:  # begun by start()
            handle, self._handle = self._handle, None
            return handle
        self._prefetch = PrefetchReader(self._open_raw, self._on_bytes)
        counted = io.BufferedReader(self._prefetch, buffer_size=1 << 20)
        if self.item.compression is None:
            return counted
        if self.item.compression == "zstd":  # streaming: fsspec's wrapper wants a seekable file
            stream = zstandard.ZstdDecompressor().stream_reader(counted, read_across_frames=True)
            return io.BufferedReader(stream, buffer_size=1 << 20)
        return fsspec.compression.compr[self.item.compression](counted, mode="rb")

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        reader = {"jsonl": self._jsonl, "parquet": self._parquet, "text": self._text}[self.item.format]
        try:
            with storage_errors(self.item.url):
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

    def _jsonl(self) -> Iterator[tuple[str, dict]]:
        text_field = self.options.text_field
        with self._open() as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    problem = _utf8_problem(line)
                    if problem:
                        self._bad("not_utf8", f"line {number}", problem, "re-encode the file as UTF-8")
                    else:
                        self._bad("malformed_json", f"line {number}", f"malformed JSON ({exc})", "fix the line")
                    continue
                if not isinstance(record, dict):
                    self._bad("malformed_json", f"line {number}", "not a JSON object", "write one object per line")
                    continue
                text = _lookup(record, text_field)
                if text is None:
                    fields = ", ".join(list(record)[:8])
                    self._bad(
                        "missing_field",
                        f"line {number}",
                        f"no field {text_field!r} (fields: {fields})",
                        "name the text field with --text-field",
                    )
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
        with storage_errors(self.item.url):
            handle = self.fs.open(self.item.path, "rb")
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
        with self._open() as handle:
            data = handle.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._bad("not_utf8", "", _utf8_problem(data) or "not valid UTF-8", "re-encode the file as UTF-8")
            return
        yield text, self._meta({}, 1)
