"""What a database reads is what it committed: part sizes checked at every open, content hashes by `verify`.

    corpusdb verify demo/db            # every part's content hash against its version's record

Every version records each part's size, rows and content hash (xxh3-128, `storage.content_hash`).
Opening a version lists the table folders (one listing per folder: a local directory walk, or
object-store list calls, which give sizes) and compares every part's size with the record, so a
part replaced or truncated by anything (a sync tool, a disk error, a hand-made copy) is an error
naming the part and the newest version that does not read it, before any query reads it. A
same-size change is caught by `verify`, which reads every byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import xxhash

from corpusdb import versions
from corpusdb.errors import VersionError
from corpusdb.storage import storage_errors
from corpusdb.tables import PART_FOLDERS

if TYPE_CHECKING:
    from corpusdb.storage import Location
    from corpusdb.versions import Snapshot

CHUNK = 8 << 20  # bytes hashed at a time by verify


def listed_sizes(location: Location) -> dict[str, int]:
    """{path relative to the database: size} of every file under the table folders (one listing each)."""
    sizes: dict[str, int] = {}
    for folder in PART_FOLDERS:
        top = location.join(folder)
        with storage_errors(location.url_of(top), location.fs):
            if not location.fs.exists(top):
                continue
            for path, info in location.fs.find(top, detail=True).items():
                sizes[location.relpath(path)] = int(info.get("size") or 0)
    return sizes


def check_sizes(location: Location, snapshot: Snapshot) -> None:
    """Raise unless every part `snapshot` lists is there with the size it was committed with.

    Raises:
        VersionError: naming the first damaged or missing part, how many there are, and the newest
            earlier version that does not read it.
    """
    parts = {path: info for table in snapshot.tables.values() for path, info in table.items()}
    if not parts:
        return
    sizes = listed_sizes(location)
    missing = sorted(p for p in parts if p not in sizes)
    changed = sorted(p for p in parts if p in sizes and info_size(parts[p]) is not None and sizes[p] != info_size(parts[p]))
    if not missing and not changed:
        return
    first = (missing or changed)[0]
    what = (f"{len(missing)} part(s) that are missing (e.g. {location.url_of(location.join(first))})" if missing else
            f"{len(changed)} part(s) whose size is not the committed one (e.g. {location.url_of(location.join(first))}: "
            f"{sizes[first]:,} bytes, committed {info_size(parts[first]):,}: replaced or truncated since)")
    raise VersionError(f"{location.url}: version {snapshot.version} lists {what}; restore them, or read {_way_back(location, snapshot, first)}")


def info_size(info: dict) -> int | None:
    size = info.get("size")
    return int(size) if size is not None else None


def _way_back(location: Location, snapshot: Snapshot, path: str) -> str:
    """Where to go instead: the newest earlier version that does not read `path`."""
    for earlier in versions.history(location):
        if earlier.version < snapshot.version and not any(path in table for table in earlier.tables.values()):
            return f"version {earlier.version}, the newest that does not read it (--as-of {earlier.version})"
    return "no earlier version: every one reads it (restore it from a copy)"


def verify(location: Location, snapshot: Snapshot, progress: bool | None = None) -> list[dict]:
    """Hash every part of a version; returns one {path, table, problem} per part whose size or content
    hash is not the committed one (empty when every part is intact). Works on a version that can no
    longer be opened (a part of the wrong size), to list every damaged part."""
    from tqdm.auto import tqdm

    parts = sorted((path, table, info) for table, listed in snapshot.tables.items() for path, info in listed.items())
    damaged = []
    total = sum(info_size(info) or 0 for _, _, info in parts)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="verify",
              disable=(not progress) if progress is not None else None, dynamic_ncols=True) as bar:
        listed = listed_sizes(location)
        for path, table, info in parts:
            full = location.join(path)
            url = location.url_of(full)
            expected = info_size(info)
            if path not in listed:
                damaged.append({"path": url, "table": table, "problem": "missing"})
                bar.update(expected or 0)
                continue
            if expected is not None and listed[path] != expected:
                damaged.append({"path": url, "table": table, "problem": f"{listed[path]:,} bytes, committed {expected:,}"})
                bar.update(expected)
                continue
            digest = xxhash.xxh3_128()
            with storage_errors(url, location.fs), location.fs.open(full, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    bar.update(len(chunk))
            if info.get("hash") and digest.hexdigest() != info["hash"]:
                damaged.append({"path": url, "table": table,
                                "problem": f"content hash {digest.hexdigest()[:16]}..., committed {info['hash'][:16]}... "
                                           "(same size: changed in place)"})
    return damaged
