"""What corpusdb's integrity checks cost: the size check at every open, and `corpusdb verify`.

    python benchmarks/integrity_checks.py --parts 30000            # a database of 30k small parts (built, then removed)
    python benchmarks/integrity_checks.py --db /big/scale-50m      # an existing database (e.g. benchmarks/scale.py's)

Open: `corpusdb.open` with the size check (one listing per table folder, compared with the
version's record) against the same open with the check switched off, best of --repeat, side by
side in one process. Verify: `corpusdb.integrity.verify` (every byte read and hashed, xxh3-128)
against reading the same files without hashing (the storage's own speed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

import corpusdb  # noqa: E402
from corpusdb import db as db_module  # noqa: E402
from corpusdb import integrity, versions  # noqa: E402


def build(folder: Path, n_parts: int) -> str:
    """A database of n_parts one-row documents parts, committed through register_parts in batches."""
    db = corpusdb.init(str(folder))
    batch = []
    for i in range(n_parts):
        table = pa.table({"doc_id": pa.array([i], pa.int64()), "source": ["s"], "text": [f"document {i}"],
                          "n_bytes": pa.array([len(f"document {i}")], pa.int64())})
        batch.append(db.location.write_parquet(table, "documents", f"part-{i:08d}.parquet").path)
        if len(batch) == 5000 or i == n_parts - 1:
            db.register_parts("documents", batch)
            batch = []
    return db.url


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="an existing database (default: build one of --parts parts)")
    parser.add_argument("--parts", type=int, default=30000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    temp = None
    if args.db:
        url = args.db
    else:
        temp = Path(tempfile.mkdtemp(prefix="integrity-"))
        started = time.perf_counter()
        url = build(temp / "db", args.parts)
        print(f"built {args.parts:,} parts in {time.perf_counter() - started:.0f} s")
    try:
        checked = best(lambda: corpusdb.open(url), args.repeat)
        original = db_module.check_sizes
        db_module.check_sizes = lambda location, snapshot: None
        try:
            unchecked = best(lambda: corpusdb.open(url), args.repeat)
        finally:
            db_module.check_sizes = original
        location = corpusdb.open(url).location
        snapshot = versions.load(location)
        n_parts = sum(len(p) for p in snapshot.tables.values())
        n_bytes = sum(int(i.get("size") or 0) for p in snapshot.tables.values() for i in p.values())
        print(f"{url}: {n_parts:,} parts, {n_bytes / 1e6:,.1f} MB")
        print(f"open with the size check   {checked:8.3f} s")
        print(f"open without it            {unchecked:8.3f} s   ratio {checked / unchecked:.2f}x")

        def read_all() -> None:
            for table in snapshot.tables.values():
                for path in table:
                    with location.fs.open(location.join(path), "rb") as handle:
                        while handle.read(8 << 20):
                            pass

        verified = best(lambda: integrity.verify(location, snapshot, progress=False), args.repeat)
        raw = best(read_all, args.repeat)
        print(f"verify (read + xxh3-128)   {verified:8.3f} s   {n_bytes / 1e6 / verified:,.0f} MB/s")
        print(f"read only                  {raw:8.3f} s   {n_bytes / 1e6 / raw:,.0f} MB/s   ratio {verified / raw:.2f}x")
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
