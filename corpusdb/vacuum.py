"""Removing files no version needs: parts of killed or failed jobs, and, when asked, old versions.

    corpusdb vacuum demo/db                      # files no version references, older than a day
    corpusdb vacuum demo/db --keep-versions 10   # also forget versions before the last 10

Jobs never delete a part once it is committed, so every version can be read back (`--as-of`), and
a killed job leaves its uncommitted parts behind, unread. Vacuum deletes, under the tables'
folders, exactly the files that no kept version lists and that are older than `grace_seconds`
(a job still running may not have committed its newest parts yet), and only files named as
corpusdb names its parts, index runs and temporaries: anything else (a user's notes, another
tool's files) is kept and reported. On a local disk a table folder, or anything in one, that is a
link leading out of the database folder is not entered (a folder moved to another disk and linked
back may hold other files); vacuum reports it. With `keep_versions`, the
older version files are deleted first, so no remaining version ever names a missing file; where
the oldest kept version is a delta (`corpusdb.versions`), its file is first rewritten whole (the
same catalog), so it no longer needs the versions before it.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import re
import time
from typing import TYPE_CHECKING

from corpusdb.storage import TMP_PREFIX, storage_errors
from corpusdb.tables import PART_FOLDERS
from corpusdb.versions import VERSIONS, checkpoint, depends_on, read, version_file, version_numbers

if TYPE_CHECKING:
    from corpusdb.db import Database

FOLDERS = (*PART_FOLDERS, "_index")
# The names corpusdb gives the files of those folders: parts, imported annotation parts, doc_id index
# runs, and temporaries (storage.TMP_PREFIX) of writes that never finished.
OURS = re.compile(r"^(?:(?:part|import)-[\w.=-]*\.parquet|run-[0-9a-f]+\.bin|" + re.escape(TMP_PREFIX) + r".*)$")


def _outside(root: str | None, path: str) -> bool:
    """Whether a local `path` leads, through a link, out of the database's folder `root` (its real
    path; None on object storage, which has no links)."""
    return root is not None and os.path.commonpath([root, os.path.realpath(path)]) != root


def _age(info: dict, now: float) -> float:
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(stamp, dt.datetime):
        stamp = stamp.timestamp()
    return now - float(stamp) if stamp else float("inf")


def vacuum(db: Database, *, keep_versions: int | None = None, grace_seconds: float = 86400.0, dry_run: bool = False) -> dict:
    """Delete unreferenced files (and versions before the last `keep_versions`); returns what was (or would be) removed.

    Raises:
        ValueError: keep_versions below 1 or a negative grace.
    """
    db.writable()
    if keep_versions is not None and keep_versions < 1:
        raise ValueError(f"keep_versions {keep_versions} must be at least 1 (the latest version is always kept)")
    if grace_seconds < 0:
        raise ValueError(f"grace {grace_seconds} must not be negative")
    location = db.location
    numbers = version_numbers(location)
    kept = numbers if keep_versions is None else numbers[-keep_versions:]
    dropped_versions = [n for n in numbers if n not in kept]
    if dropped_versions and not dry_run and len(depends_on(location, kept[0])) > 1:
        checkpoint(location, kept[0])  # the oldest kept version is a delta on a dropped one: make it whole
    referenced: set[str] = set()
    for number in kept:
        snapshot = read(location, number)
        for parts in snapshot.tables.values():
            referenced.update(parts)
        for runs in snapshot.indexes.values():
            referenced.update(entry["path"] for entry in runs.values())
    if not dry_run:
        for number in dropped_versions:
            location.remove(location.join(VERSIONS, version_file(number)))
    now = time.time()
    removed, kept_young, freed, foreign, linked_out = [], 0, 0, [], []
    root = os.path.realpath(location.path) if location.is_local else None
    for folder in FOLDERS:
        path = location.join(folder)
        if _outside(root, path):
            linked_out.append(folder)
            continue
        with storage_errors(location.url_of(path)):
            location.fs.invalidate_cache(path)
            found = location.fs.find(path, detail=True) if location.fs.exists(path) else {}
        for full, info in sorted(found.items()):
            relative = location.relpath(full)
            if relative in referenced or info.get("type") == "directory":
                continue
            if _outside(root, full):
                linked_out.append(relative)
                continue
            if not OURS.match(posixpath.basename(full)):
                foreign.append(relative)
                continue
            if _age(info, now) < grace_seconds:
                kept_young += 1
                continue
            removed.append(relative)
            freed += int(info.get("size") or 0)
            if not dry_run:
                location.remove(full)
    return {
        "versions_removed": dropped_versions, "files_removed": removed, "bytes_freed": freed,
        "files_kept_as_recent": kept_young, "foreign_files_kept": foreign, "links_not_followed": sorted(set(linked_out)),
        "dry_run": dry_run,
        "temporaries_removed": sum(1 for p in removed if posixpath.basename(p).startswith(TMP_PREFIX)),
    }
