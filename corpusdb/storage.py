"""Where a database and its inputs live: fsspec URLs, atomic writes and clear storage errors.

    python -c "from corpusdb.storage import Location; print(Location('memory://db').join('documents'))"

Every write goes through `write_atomic` (bytes) or `open_atomic` (a file written in pieces): on a
local disk a temporary file renamed into place, on object storage one upload (a multipart upload is
invisible until completed, and aborted on failure), so a reader never sees half a file and a
crashed writer leaves nothing behind but, at worst, a hidden `.tmp` file.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import fsspec
import xxhash
from fsspec.core import url_to_fs

from corpusdb.errors import StorageError

TMP_PREFIX = ".tmp-"


def parse_storage_options(pairs: list[str] | tuple[str, ...]) -> dict:
    """Turn `key=value` strings (CLI `-o`) into fsspec storage options.

    `endpoint_url`, `region_name` and `verify` go to the S3 client (`client_kwargs`), as s3fs wants.
    """
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"storage option {pair!r} is not KEY=VALUE, e.g. -o endpoint_url=http://127.0.0.1:8333")
        parsed: object = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        if key in ("endpoint_url", "region_name", "verify"):
            options.setdefault("client_kwargs", {})[key] = parsed
        else:
            options[key] = parsed
    return options


def default_storage_options(protocol: str) -> dict:
    """Options taken from the environment: `AWS_ENDPOINT_URL` (or `S3_ENDPOINT_URL`) for S3."""
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL")
        if endpoint:
            return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


def describe_error(url: str, exc: BaseException, fs: fsspec.AbstractFileSystem | None = None) -> str:
    """One line saying why `url` failed and what to do about it (`fs`: the filesystem used, to name
    its credentials)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    name = type(exc).__name__
    lowered = text.lower()
    if name == "NoCredentialsError" or "unable to locate credentials" in lowered:
        return (f"{url}: no credentials for object storage found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE), pass -o key=... -o secret=..., or -o anon=true for a public bucket")
    # before "not found": S3 says an unknown key "does not exist in our records"
    if isinstance(exc, PermissionError) or any(
        word in lowered for word in ("accessdenied", "access denied", "forbidden", "signature", "invalidaccesskeyid",
                                     "access key id")
    ):
        used = f" with {credentials_used(fs)}" if fs is not None and url.startswith(("s3://", "s3a://")) else ""
        return (
            f"{url}: access denied{used} ({text}); check the credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or -o key=... -o secret=...)"
        )
    if isinstance(exc, FileNotFoundError) or "nosuchbucket" in lowered or "does not exist" in lowered:
        return f"{url}: not found; check the path (and bucket name)"
    if any(word in lowered for word in ("connect", "endpoint", "timed out", "name or service", "unreachable")) or name in (
        "EndpointConnectionError",
        "ClientConnectorError",
        "ConnectTimeoutError",
    ):
        return f"{url}: cannot reach the storage server ({text}); check the endpoint (-o endpoint_url=... or AWS_ENDPOINT_URL)"
    return f"{url}: {name}: {text}"


def credentials_used(fs: fsspec.AbstractFileSystem) -> str:
    """Which S3 credentials are signed with, for messages: the access key id and where it came from,
    never the secret."""
    key = getattr(fs, "key", None)
    if key:
        return f"access key id {key!r} (from -o key=...)"
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return f"access key id {os.environ['AWS_ACCESS_KEY_ID']!r} (from AWS_ACCESS_KEY_ID)"
    if os.environ.get("AWS_PROFILE"):
        return f"the profile {os.environ['AWS_PROFILE']!r} (from AWS_PROFILE)"
    return "the default credential chain (~/.aws, instance role)"


def resolve(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path of `url`, with options from the environment.

    Raises:
        StorageError: the URL's filesystem cannot be set up (unknown protocol, bad options).
    """
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    with storage_errors(url):
        return url_to_fs(url, **{**default_storage_options(protocol), **(storage_options or {})})


@contextlib.contextmanager
def storage_errors(url: str, fs: fsspec.AbstractFileSystem | None = None) -> Iterator[None]:
    """Turn filesystem and network exceptions raised inside into one-line `StorageError`s."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise StorageError(describe_error(url, exc, fs)) from exc
    except Exception as exc:  # botocore/aiohttp errors that are not OSError subclasses
        if type(exc).__module__.split(".")[0] in ("botocore", "aiohttp", "aiobotocore", "s3fs", "gcsfs"):
            raise StorageError(describe_error(url, exc, fs)) from exc
        raise


def temporary_of(name: str) -> str | None:
    """The file a temporary is for (`.tmp-<name>-<32 hex digits>`, as `Location.write_atomic` names
    them), or None for any other name."""
    if not name.startswith(TMP_PREFIX) or not re.fullmatch(r"-[0-9a-f]{32}", name[-33:]):
        return None
    return name[len(TMP_PREFIX) : -33]


def _write_synced(handle, data: bytes) -> None:
    """Write all of `data` to an open local file and make it durable before it is published."""
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())


def content_hash(data: bytes) -> str:
    """The content hash corpusdb records for every file it writes: xxh3-128, hex."""
    return xxhash.xxh3_128_hexdigest(data)


@dataclass(frozen=True)
class WrittenFile:
    """A file as written: in-filesystem path, size and content hash."""

    path: str
    size: int
    hash: str


class AtomicFile(io.RawIOBase):
    """A write-only file that counts and hashes (xxh3-128, as `content_hash`) what passes through it."""

    def __init__(self, handle, path: str, url: str):
        self._handle, self.path, self.url = handle, path, url
        self._hash, self.size = xxhash.xxh3_128(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        with storage_errors(self.url):
            self._handle.write(view)
        self._hash.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:  # the publishing block closes the file underneath, not a writer
        pass

    @property
    def written(self) -> WrittenFile:
        return WrittenFile(self.path, self.size, self._hash.hexdigest())


@dataclass(frozen=True)
class Location:
    """A folder on any fsspec filesystem: the filesystem plus the path inside it."""

    url: str
    storage_options: dict = field(default_factory=dict, compare=False, hash=False)
    fs: fsspec.AbstractFileSystem = field(init=False, compare=False, hash=False, repr=False)
    path: str = field(init=False)

    def __post_init__(self) -> None:
        fs, path = resolve(self.url, self.storage_options)
        object.__setattr__(self, "fs", fs)
        object.__setattr__(self, "path", path.rstrip("/") or path)

    @property
    def protocol(self) -> str:
        protocol = self.fs.protocol
        return protocol[0] if isinstance(protocol, (tuple, list)) else protocol

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def join(self, *parts: str) -> str:
        """Path inside the filesystem (no protocol) of a file or folder under this location."""
        return posixpath.join(self.path, *parts)

    def url_of(self, path: str) -> str:
        """Full URL of an in-filesystem path, as DuckDB and users see it."""
        if self.is_local:
            return path
        return self.fs.unstrip_protocol(path)

    def exists(self, *parts: str) -> bool:
        with storage_errors(self.url_of(self.join(*parts))):
            return self.fs.exists(self.join(*parts))

    def read_bytes(self, *parts: str) -> bytes:
        path = self.join(*parts)
        with storage_errors(self.url_of(path)):
            return self.fs.cat_file(path)

    def relpath(self, path: str) -> str:
        """An in-filesystem path relative to this location (as catalogs record it)."""
        return posixpath.relpath(path, self.path)

    def write_atomic(self, data: bytes, *parts: str) -> WrittenFile:
        """Write `data` so that readers see either nothing or the whole file."""
        path = self.join(*parts)
        with storage_errors(self.url_of(path)):
            if self.is_local:
                tmp = self._local_temporary(path, data)
                try:
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
            else:
                # One request: object stores publish an object only when the upload completes.
                self.fs.pipe_file(path, data)
        return WrittenFile(path, len(data), content_hash(data))

    def create_exclusive(self, data: bytes, *parts: str) -> bool:
        """Write the whole file only if nothing is there yet; False if another writer was first.

        Local disk: a hard link from a complete temporary file (link fails on an existing name).
        Object storage: a conditional PUT (`If-None-Match: *`, s3fs `mode="create"`), which
        S3 and SeaweedFS decide atomically. Other fsspec filesystems fall back to a check then a
        write, which is not safe against a writer on another machine.
        """
        path = self.join(*parts)
        with storage_errors(self.url_of(path)):
            if self.is_local:
                tmp = self._local_temporary(path, data)
                try:
                    os.link(tmp, path)
                    return True
                except FileExistsError:
                    return False
                except OSError:  # no hard links here (some network or FUSE filesystems)
                    return self._create_local(path, data)
                finally:
                    os.remove(tmp)
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            except OSError as exc:
                text = str(exc).lower()
                if any(word in text for word in ("pre-condition", "precondition", "412", "conditionalrequestconflict")):
                    return False  # another writer was first (409: its conditional write is in flight)
                raise
            # A store that ignores the condition would let a second writer replace the first one's
            # file: read it back, so that such a store fails loudly instead of losing a commit.
            self.fs.invalidate_cache(path)
            if self.fs.cat_file(path) != data:
                raise StorageError(f"{self.url_of(path)}: this object store ignored a conditional write (If-None-Match); "
                                   "corpusdb needs one that honours it (AWS S3, SeaweedFS, MinIO, R2) for safe commits")
            return True

    @staticmethod
    def _create_local(path: str, data: bytes) -> bool:
        """Create-if-absent with O_EXCL: atomic as to who creates the file, though a reader may briefly
        see it partly written (readers of versions retry an unreadable newest one)."""
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            _write_synced(handle, data)
        return True

    @staticmethod
    def _local_temporary(path: str, data: bytes) -> str:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f"{TMP_PREFIX}{os.path.basename(path)}-{uuid.uuid4().hex}")
        with open(tmp, "wb") as handle:
            _write_synced(handle, data)
        return tmp

    @contextlib.contextmanager
    def open_atomic(self, *parts: str) -> Iterator[AtomicFile]:
        """A file to write in pieces that readers see whole or not at all, published when the block ends.

        Local disk: a temporary file, made durable and renamed into place. Object storage: one
        upload (multipart for a large file), completed only when the block ends and aborted when it
        raises. The yielded file hashes what is written; `.written` is the `WrittenFile` afterwards.
        """
        path, url = self.join(*parts), self.url_of(self.join(*parts))
        with storage_errors(url):
            if self.is_local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = os.path.join(os.path.dirname(path), f"{TMP_PREFIX}{os.path.basename(path)}-{uuid.uuid4().hex}")
                handle = open(tmp, "wb")
            elif self.protocol == "memory":  # its files are visible while written: put it in one piece
                tmp, handle = None, io.BytesIO()
            else:
                tmp, handle = None, self.fs.open(path, "wb")
        out = AtomicFile(handle, path, url)
        try:
            yield out  # the caller's own errors pass through as they are; the file's are storage errors
            with storage_errors(url):
                if tmp is not None:
                    handle.flush()
                    os.fsync(handle.fileno())
                    handle.close()
                    os.replace(tmp, path)
                elif isinstance(handle, io.BytesIO):
                    self.fs.pipe_file(path, handle.getvalue())
                else:
                    handle.close()
        except BaseException:
            if tmp is not None:
                handle.close()
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
            elif not isinstance(handle, io.BytesIO):  # abort the upload: nothing is published
                with contextlib.suppress(Exception):
                    handle.discard()
            raise

    def write_parquet(self, table, *parts: str, **options) -> WrittenFile:
        """Write a pyarrow table as one Parquet file (zstd), atomically, encoded straight into the file.

        `options` go to `pyarrow.parquet.write_table` (e.g. row_group_size).
        """
        import pyarrow.parquet as pq

        with self.open_atomic(*parts) as out:
            pq.write_table(table, out, **{"compression": "zstd", **options})
        return out.written

    def list_files(self, *parts: str, suffix: str = "") -> list[str]:
        """Paths of the files under a folder (recursively), sorted, skipping temporary files."""
        folder = self.join(*parts)
        with storage_errors(self.url_of(folder)):
            if not self.fs.exists(folder):
                return []
            found = self.fs.find(folder)
        return sorted(
            path
            for path in found
            if path.endswith(suffix) and not posixpath.basename(path).startswith((TMP_PREFIX, "."))
        )

    def file_sizes(self, *parts: str, suffix: str = "") -> dict[str, int]:
        """{path: size in bytes} of the files `list_files` lists, from one listing."""
        folder = self.join(*parts)
        with storage_errors(self.url_of(folder)):
            if not self.fs.exists(folder):
                return {}
            found = self.fs.find(folder, detail=True)
        return {
            path: int(info.get("size") or 0)
            for path, info in sorted(found.items())
            if path.endswith(suffix) and not posixpath.basename(path).startswith((TMP_PREFIX, "."))
        }

    def remove_temporaries(self, folder: str, owned: Callable[[str], bool], min_age: float = 0.0) -> int:
        """Remove the temporaries a killed write left in `folder` for files `owned(name)` says are the
        caller's, last written at least `min_age` seconds ago (a younger one may be a concurrent
        job's write in flight), with one listing of the folder; returns how many were removed.
        Local disk only: object stores publish a file in one request and leave no temporaries."""
        root = self.join(folder)
        if not self.is_local or not os.path.isdir(root):
            return 0
        now, removed = time.time(), 0
        with storage_errors(self.url_of(root)):
            for entry in os.scandir(root):
                target = temporary_of(entry.name)
                if target is None:
                    continue
                try:
                    if owned(target) and now - entry.stat().st_mtime >= min_age:
                        os.remove(entry.path)
                        removed += 1
                except FileNotFoundError:  # gone meanwhile
                    continue
        return removed

    def remove(self, path: str) -> None:
        """Remove a file; one that is already gone (another job removed it) is fine."""
        with storage_errors(self.url_of(path)):
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass

    def invalidate(self) -> None:
        """Forget cached listings so the next listing sees other writers' files."""
        self.fs.invalidate_cache()


class WriteQueue:
    """Writes (parts, markers) on one background thread, in the order they were submitted.

    Encoding and uploading a part (pyarrow and the network release the GIL) run while the caller
    computes the next one; at most `depth` writes are in flight, which bounds memory.
    `on_done(result)` runs in the caller's thread once a write is in place, in order (the jobs
    count parts and hit their failpoints there).
    """

    def __init__(self, depth: int = 2):
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="part-writer")
        self._pending: deque[tuple[Future, Callable]] = deque()

    def submit(self, func: Callable, *args, on_done: Callable = lambda result: None) -> None:
        while len(self._pending) >= self.depth:
            self._collect()
        self._pending.append((self._pool.submit(func, *args), on_done))

    def _collect(self) -> None:
        future, on_done = self._pending.popleft()
        on_done(future.result())

    def drain(self) -> None:
        """Wait for every write in flight, raising the first failure."""
        while self._pending:
            self._collect()

    def abort(self) -> None:
        """Wait for every write in flight, ignoring failures (the caller is failing already)."""
        for future, _ in self._pending:
            try:
                future.result()
            except BaseException:
                pass
        self._pending.clear()

    def close(self) -> None:
        self._pool.shutdown()
