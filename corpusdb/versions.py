"""Committed versions of a database: every job's result is one atomic commit of the whole catalog.

    corpusdb versions demo/db

A version is one JSON file, `_versions/<20-digit number>.json`, for the catalog as that commit
left it: the live parts of every table (path, size, content hash, rows), the score names with
their models' identities, the user views' SQL, the ingested inputs, the MinHash settings and the
runs of the doc_id index (`corpusdb.docindex`). Every CHECKPOINT_EVERY-th version (and version 1)
is a checkpoint holding all of it; the others hold only their change to the version before
(`delta`: per table the parts added and removed, per other entry the keys set and dropped), as
Delta Lake's log does, so a commit that adds one part to a table of 30k parts writes a few
hundred bytes, not megabytes, and reading a version reads its checkpoint and at most
CHECKPOINT_EVERY - 1 small deltas. Files written before deltas (all checkpoints) read as before.
Parts never change once written, so a version pins the data exactly: reading version N later
gives the same rows, whatever was ingested, scored or dropped since (`--as-of N`).

Commits are optimistic. A job builds version N+1 from the latest version N and creates its file
only if no other job has (a hard link on local disk, a conditional PUT, `If-None-Match: *`, on S3).
A job that loses the race reads the winner's version and applies its change again on top of it,
so jobs running at the same time never lose each other's work, and readers only ever see what a
commit published. Version 0 is the empty database (no file).
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from corpusdb.errors import VersionError
from corpusdb.storage import Location, WrittenFile, content_hash
from corpusdb.tables import TABLES

VERSIONS = "_versions"
VERSION_RE = re.compile(r"^(\d{20})\.json$")
MAX_ATTEMPTS = 200
CHECKPOINT_EVERY = 16
NESTED = ("tables",)  # content entries whose values are diffed one level deeper (table -> part path)


def version_file(number: int) -> str:
    return f"{number:020d}.json"


@dataclass
class Snapshot:
    """The catalog at one version: parts per table, models, views, ingested inputs, settings.

    `tables[table][path]` is `{"size", "hash", "rows", ...}` for each live part (path relative to
    the database); ingest parts also carry their `input` key and `chunk`, signature and annotation
    parts the documents part they cover (`of`). `annotations[name]` is an annotation's producer
    identity and columns (`corpusdb.annotations`), as `models[name]` is a score name's model.
    """

    version: int = 0
    parent: int | None = None
    created_at: str = ""
    operation: str = "empty"
    summary: str = ""
    tables: dict[str, dict[str, dict]] = field(default_factory=lambda: {table: {} for table in TABLES})
    models: dict[str, dict] = field(default_factory=dict)
    annotations: dict[str, dict] = field(default_factory=dict)
    views: dict[str, dict] = field(default_factory=dict)
    inputs: dict[str, dict] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)
    indexes: dict[str, dict] = field(default_factory=dict)  # index name -> its runs (`corpusdb.docindex`)

    def content(self) -> dict:
        """What the version holds (everything but its number, time and description)."""
        return {"tables": self.tables, "models": self.models, "annotations": self.annotations, "views": self.views,
                "inputs": self.inputs, "settings": self.settings, "indexes": self.indexes}

    def to_dict(self) -> dict:
        return {"format": "corpusdb-version", "version": self.version, "parent": self.parent, "created_at": self.created_at,
                "operation": self.operation, "summary": self.summary, **self.content()}

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        tables = {table: {} for table in TABLES}
        tables.update(data.get("tables") or {})
        return cls(version=data["version"], parent=data.get("parent"), created_at=data.get("created_at", ""),
                   operation=data.get("operation", ""), summary=data.get("summary", ""), tables=tables,
                   models=data.get("models") or {}, annotations=data.get("annotations") or {},
                   views=data.get("views") or {}, inputs=data.get("inputs") or {},
                   settings=data.get("settings") or {}, indexes=data.get("indexes") or {})

    def child(self, operation: str) -> Snapshot:
        """A deep copy to become the next version."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        return Snapshot(version=self.version + 1, parent=self.version, created_at=now, operation=operation,
                        tables=copy.deepcopy(self.tables), models=copy.deepcopy(self.models),
                        annotations=copy.deepcopy(self.annotations), views=copy.deepcopy(self.views),
                        inputs=copy.deepcopy(self.inputs), settings=copy.deepcopy(self.settings),
                        indexes=copy.deepcopy(self.indexes))

    def parts(self, table: str, prefix: str = "") -> list[str]:
        """Paths (relative to the database) of a table's live parts, sorted; optionally under `prefix`."""
        return sorted(path for path in self.tables.get(table, {}) if path.startswith(prefix))

    def n_rows(self, table: str, prefix: str = "") -> int:
        """Rows of a table's live parts (optionally only those under `prefix`), from the parts' records."""
        return sum(int(info.get("rows") or 0) for path, info in self.tables.get(table, {}).items() if path.startswith(prefix))

    def add_part(self, table: str, location: Location, written: WrittenFile, rows: int, **extra) -> str:
        """Record a written file as a live part of `table`; returns its relative path."""
        path = location.relpath(written.path)
        self.tables.setdefault(table, {})[path] = {"size": written.size, "hash": written.hash, "rows": int(rows), **extra}
        return path


def existing_part(location: Location, path: str) -> tuple[WrittenFile, int, dict]:
    """(size and content hash, rows, other fields of its record) of a Parquet file already under `location`,
    to be recorded as a part: `snapshot.add_part(table, location, written, rows, **fields)`."""
    import io

    import pyarrow.parquet as pq

    from corpusdb.tables import schema_key

    data = location.read_bytes(location.relpath(path))
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    return (WrittenFile(path, len(data), content_hash(data)), metadata.num_rows,
            {"schema": schema_key(metadata.schema.to_arrow_schema())})


def _read_file(location: Location, number: int) -> dict:
    """The JSON of version `number`'s file (retried for a moment where a writer without atomic creation is still writing it)."""
    name = version_file(number)
    for attempt in range(20):
        try:
            return orjson.loads(location.read_bytes(VERSIONS, name))
        except orjson.JSONDecodeError as exc:
            if attempt == 19:
                raise VersionError(f"{location.url}/{VERSIONS}/{name}: not valid JSON ({exc}); restore it from a backup") from exc
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _chain(location: Location, number: int) -> list[dict]:
    """The files version `number` is read from: its own, then its parents' back to a checkpoint."""
    chain = [_read_file(location, number)]
    while "delta" in chain[-1]:
        chain.append(_read_file(location, chain[-1]["parent"]))
    return chain


def depends_on(location: Location, number: int) -> list[int]:
    """The versions whose files reading version `number` needs (its own included), newest first."""
    return [data["version"] for data in _chain(location, number)]


def read(location: Location, number: int) -> Snapshot:
    """Version `number`: its checkpoint with the deltas after it applied."""
    chain = _chain(location, number)
    snapshot = Snapshot.from_dict(chain.pop())
    while chain:
        snapshot = apply_delta(snapshot, chain.pop())
    return snapshot


def checkpoint(location: Location, number: int) -> None:
    """Rewrite version `number`'s file whole (the same catalog), so reading it needs no earlier version."""
    snapshot = read(location, number)
    location.write_atomic(orjson.dumps(snapshot.to_dict(), option=orjson.OPT_SORT_KEYS), VERSIONS, version_file(number))


def diff(old: dict, new: dict, nested: bool = False) -> dict:
    """{"set": {key: value}, "drop": [key]} turning `old` into `new` (with `nested`, per key one level deeper)."""
    out: dict = {}
    if nested:
        changed = {key: diff(old.get(key, {}), value) for key, value in new.items()}
        changed = {key: change for key, change in changed.items() if change}
        if changed:
            out["change"] = changed
    else:
        changed = {key: value for key, value in new.items() if key not in old or old[key] != value}
        if changed:
            out["set"] = changed
    dropped = sorted(key for key in old if key not in new)
    if dropped:
        out["drop"] = dropped
    return out


def _patch(old: dict, change: dict, nested: bool = False) -> dict:
    out = dict(old)
    for key in change.get("drop", []):
        out.pop(key, None)
    if nested:
        for key, inner in change.get("change", {}).items():
            out[key] = _patch(out.get(key, {}), inner)
    out.update(change.get("set", {}))
    return out


def apply_delta(snapshot: Snapshot, data: dict) -> Snapshot:
    """The version a delta file describes, from the snapshot of its parent (which is not changed)."""
    if data.get("parent") != snapshot.version:
        raise VersionError(f"version {data.get('version')} is a delta on version {data.get('parent')}, "
                           f"not on {snapshot.version}")
    content = snapshot.content()
    delta = data["delta"]
    patched = {key: _patch(value, delta.get(key, {}), key in NESTED) if key in delta else value
               for key, value in content.items()}
    return Snapshot.from_dict({**data, **patched})


def encode(new: Snapshot, parent: Snapshot) -> bytes:
    """The file of version `new`: a checkpoint, or its delta on `parent` (the version before it)."""
    data = new.to_dict()
    if new.version % CHECKPOINT_EVERY and new.version > 1 and parent.version == new.version - 1:
        old = parent.content()
        delta = {key: diff(old[key], value, key in NESTED) for key, value in new.content().items()}
        data = {key: value for key, value in data.items() if key not in old}
        data["delta"] = {key: change for key, change in delta.items() if change}
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def version_numbers(location: Location) -> list[int]:
    """The committed version numbers, ascending (a fresh listing)."""
    folder = location.join(VERSIONS)
    location.fs.invalidate_cache(folder)
    numbers = []
    for path in location.list_files(VERSIONS, suffix=".json"):
        match = VERSION_RE.match(path.rsplit("/", 1)[-1])
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def load(location: Location, as_of: int | None = None) -> Snapshot:
    """The latest committed version, or version `as_of`.

    Raises:
        VersionError: `as_of` is not a committed version.
    """
    numbers = version_numbers(location)
    if as_of is None:
        return read(location, numbers[-1]) if numbers else Snapshot()
    if as_of == 0 and not numbers:
        return Snapshot()
    if as_of not in numbers:
        known = f"versions {numbers[0]}..{numbers[-1]}" if numbers else "no versions yet"
        raise VersionError(f"{location.url}: version {as_of} does not exist ({known}); `corpusdb versions DB` lists them")
    return read(location, as_of)


def history(location: Location, limit: int | None = None) -> list[Snapshot]:
    """Committed versions, newest first (the `limit` newest), each file read once."""
    numbers = version_numbers(location)
    numbers = numbers[-limit:] if limit else numbers
    out: list[Snapshot] = []
    for number in numbers:
        data = _read_file(location, number) if out else None
        if data is not None and "delta" in data and data.get("parent") == out[-1].version:
            out.append(apply_delta(out[-1], data))
        else:
            out.append(read(location, number))
    return out[::-1]


def commit(location: Location, operation: str, change: Callable[[Snapshot], str | None]) -> Snapshot:
    """Apply `change` to the latest version and publish the result as the next version.

    `change(snapshot)` edits a copy of the latest version in place and may return a one-line
    summary; it may raise to abort (nothing is committed). When another job commits first,
    `change` runs again on top of that job's version, so it must derive everything from the
    snapshot it is given. A change that leaves the content as it was commits nothing.

    Returns:
        The committed version (or the latest one, where nothing changed).

    Raises:
        VersionError: the commit kept losing to other writers.
    """
    for attempt in range(MAX_ATTEMPTS):
        latest = load(location)
        new = latest.child(operation)
        new.summary = change(new) or ""
        if new.content() == latest.content():
            return latest
        data = encode(new, latest)
        if location.create_exclusive(data, VERSIONS, version_file(new.version)):
            return new
        time.sleep(random.uniform(0, min(0.02 * 2 ** min(attempt, 6), 1.0)))  # another job committed first
    raise VersionError(f"{location.url}: could not commit {operation!r} after {MAX_ATTEMPTS} attempts; "
                       "too many jobs are committing at once, re-run it")
