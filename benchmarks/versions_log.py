"""The version log at many parts: bytes a one-part commit writes and the time to read the latest version,
delta files with checkpoints (corpusdb now) side by side with full snapshots per version (before).

    python benchmarks/versions_log.py --parts 30000 --commits 64

Both logs get the same commits: one commit of PARTS parts, then COMMITS commits of one part each
(as a stream of small ingests does). Full snapshots are the same catalogs written whole.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from corpusdb import versions
from corpusdb.storage import Location


def _parts(start: int, n: int) -> dict:
    return {f"documents/part-{i:08d}-00000-{i:08x}.parquet": {"size": 250_000_000 + i, "hash": f"{i:032x}", "rows": 1_100_000,
                                                                 "schema": "0123456789abcdef", "input": f"in-{i}", "chunk": 0}
            for i in range(start, start + n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=30_000)
    parser.add_argument("--commits", type=int, default=64)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="corpusdb-versions-"))
    try:
        location = Location(str(root / "delta"))
        full = root / "full" / versions.VERSIONS
        full.mkdir(parents=True)
        started = time.perf_counter()
        versions.commit(location, "bulk", lambda s: s.tables["documents"].update(_parts(0, args.parts)))
        commit_s = {"delta": 0.0, "full": 0.0}
        for c in range(args.commits):
            t = time.perf_counter()
            new = versions.commit(location, "ingest", lambda s, c=c: s.tables["documents"].update(_parts(args.parts + c, 1)))
            commit_s["delta"] += time.perf_counter() - t
            # the same commit as before deltas: read the latest whole version, copy, change, write it whole
            t = time.perf_counter()
            previous = full / versions.version_file(new.version - 1)
            base = versions.Snapshot.from_dict(orjson.loads(previous.read_bytes())) if previous.exists() else versions.read(
                location, 1)
            made = base.child("ingest")
            made.tables["documents"].update(_parts(args.parts + c, 1))
            (full / versions.version_file(new.version)).write_bytes(orjson.dumps(made.to_dict(), option=orjson.OPT_SORT_KEYS))
            commit_s["full"] += time.perf_counter() - t
        numbers = range(2, args.commits + 2)
        sizes = {"delta": [(root / "delta" / versions.VERSIONS / versions.version_file(n)).stat().st_size for n in numbers],
                 "full": [(full / versions.version_file(n)).stat().st_size for n in numbers]}
        t = time.perf_counter()
        latest = versions.load(location)
        read_delta = time.perf_counter() - t
        t = time.perf_counter()
        whole = versions.Snapshot.from_dict(orjson.loads((full / versions.version_file(latest.version)).read_bytes()))
        read_full = time.perf_counter() - t
        assert whole.content() == latest.content()
        print(f"{args.parts:,} parts, then {args.commits} one-part commits (setup {time.perf_counter() - started:.1f} s)")
        print("| | delta + checkpoints | full snapshots | ratio |")
        print("| --- | --- | --- | --- |")
        for label, key in (("median bytes per commit", "median"), ("log bytes in all", "sum")):
            value = {k: sorted(v)[len(v) // 2] if key == "median" else sum(v) for k, v in sizes.items()}
            print(f"| {label} | {value['delta']:,} | {value['full']:,} | {value['delta'] / value['full']:.4f}x |")
        print(f"| seconds per commit (read latest, change, write) | {commit_s['delta'] / args.commits:.4f} | "
              f"{commit_s['full'] / args.commits:.4f} | {commit_s['delta'] / commit_s['full']:.2f}x |")
        print(f"| seconds to read the latest version | {read_delta:.3f} | {read_full:.3f} | {read_delta / read_full:.2f}x |")
        print(f"| files read for the latest version | {len(versions.depends_on(location, latest.version))} | 1 | |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
