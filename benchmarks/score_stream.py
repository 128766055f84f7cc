"""The scoring job's stream of instances: its join planned as written (spans hashed) vs as DuckDB plans it.

    python benchmarks/score_stream.py --n 4000000                      # ~0.5 GB of disk, a minute
    python benchmarks/score_stream.py --n 4000000,16000000 --keep /big  # the growth
    python benchmarks/score_stream.py --n 50000000 --dir /big/scale-50m-instances

Scoring instances (`corpusdb score --unit instances`) cuts each instance from its document: the
instance spans joined to the documents, every instance flagged done or not, one DuckDB thread (as the
job reads). DuckDB hashes the side it estimates smaller, the documents, whose text then sits in the
hash table, all of it, before the first instance comes out. The job plans that join as written
(`corpusdb.scoring.job.reader_as_written`): the spans are hashed (~40 bytes each) and the documents'
text streams past them. Each side runs in a fresh process over the same synthetic database
(`benchmarks/synthetic.py`: ~2 kB documents cut into ~250-byte instances) and consumes every batch
(text included), as the job's producer does; the table shows the seconds to the first batch and to the
last, CPU seconds and peak RSS, and checks both give the same rows (count and a checksum of the ids).
A third side, "runs", is the job's stream where the spans record their covers (as `corpusdb instances`
writes them; the synthetic spans record theirs): a run of documents parts at a time
(`corpusdb.scoring.job.instance_runs`), hashing the run's spans alone.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIDES = ("duckdb", "as_written", "runs")


def child(db_path: str, side: str, run_rows: int) -> dict:
    import corpusdb
    from corpusdb.scoring import job
    from corpusdb.scoring.job import (INSTANCE_ROWS, READ_DOCS, instance_runs, placed_sql, reader_as_written,
                                      stream_segments, stream_sql)

    db = corpusdb.open(db_path)
    db.con.execute("set threads = 1")  # as the job reads
    cursor = db.con.cursor()
    name = "not-scored-yet"
    job.RUN_ROWS = run_rows or job.RUN_ROWS
    started, cpu = time.perf_counter(), time.process_time()
    if side == "runs":  # the job's stream (`corpusdb.scoring.job.run_score`): a run of documents parts at a time
        assert instance_runs(db, name) is not None, "the spans record no covers"
        segments = stream_segments(db, name, "instances", "true")
    else:  # one stream over every part
        segments = [([placed_sql(db)], stream_sql(INSTANCE_ROWS), [name])]

    def batches():
        for statements, query, params in segments:
            for statement in statements:
                cursor.execute(statement)
            yield from (cursor.sql(query, params=params).to_arrow_reader(READ_DOCS) if side == "duckdb"
                        else reader_as_written(db, cursor, query, params, READ_DOCS))

    first, rows, checksum, text_bytes = None, 0, 0, 0
    for batch in batches():
        if first is None:
            first = time.perf_counter() - started
        rows += batch.num_rows
        ids = batch.column("doc_id").to_numpy()
        checksum = (checksum + int((ids.astype("uint64") * 0x9E3779B97F4A7C15).sum(dtype="uint64"))) % 2**64
        text_bytes += batch.column("text").nbytes
    return {"first_s": first or 0.0, "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
            "rss_gb": peak_rss(), "rows": rows,
            "checksum": checksum, "text_gb": text_bytes / 1e9}


def peak_rss() -> float:
    """This process's peak RSS in GB since it started (VmHWM): `ru_maxrss` of a process forked from a larger one starts
    at its parent's RSS (a run that built the database first reported that for every side)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024 / 1e9


def run(db_path: str, side: str, run_rows: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", side, db_path, str(run_rows)], capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="4000000", help="instances, or a comma-separated growth curve")
    parser.add_argument("--dir", type=Path, help="where the database of one size is built and kept (reused if there)")
    parser.add_argument("--keep", type=Path, help="folder where databases of every size are built and kept")
    parser.add_argument("--run-rows", type=int, help="documents a run holds [default: the job's RUN_ROWS]")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[1], args.child[0], int(args.child[2]))))
        return
    from benchmarks.synthetic import build

    sizes = [int(float(x)) for x in args.n.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = args.dir if args.dir and len(sizes) == 1 else (args.keep or Path(tmp)) / f"instances-{n}"
            started = time.perf_counter()
            build(folder, n, "instances", covers=True)
            print(f"\n{n:,} synthetic instances at {folder} ({time.perf_counter() - started:.0f} s to build or reuse)")
            print(f"{'join':12} {'first batch s':>13} {'all s':>7} {'cpu s':>7} {'RSS GB':>7}  rows")
            got = {side: run(str(folder), side, args.run_rows or 0) for side in SIDES}
            results[n] = got
            for side in SIDES:
                r = got[side]
                if "error" in r:
                    print(f"{side:12} error: {r['error']}")
                    continue
                print(f"{side:12} {r['first_s']:13.2f} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {r['rss_gb']:7.2f}  {r['rows']:,}")
            for label, a, b in (("as written / DuckDB's plan", "duckdb", "as_written"), ("runs / one stream", "as_written", "runs")):
                old, new = got[a], got[b]
                if "error" not in old and "error" not in new:
                    same = (old["rows"], old["checksum"]) == (new["rows"], new["checksum"])
                    print(f"{label}: first batch {new['first_s'] / max(old['first_s'], 1e-9):.2f}x, all "
                          f"{new['wall_s'] / max(old['wall_s'], 1e-9):.2f}x, RSS {new['rss_gb'] / max(old['rss_gb'], 1e-9):.2f}x; "
                          f"{'the same rows' if same else 'ROWS DIFFER'} ({new['text_gb']:.1f} GB of instance text)")
    if len(sizes) > 1:
        for side in SIDES:
            pairs = [(n, results[n][side]) for n in sizes if "error" not in results[n][side]]
            if len(pairs) > 1:
                (n0, a), (n1, b) = pairs[0], pairs[-1]
                exponent = {k: math.log(max(b[k], 1e-9) / max(a[k], 1e-9)) / math.log(n1 / n0) for k in ("first_s", "rss_gb")}
                print(f"{side}: growth exponent {n0:,} -> {n1:,}: first batch {exponent['first_s']:.2f}, RSS {exponent['rss_gb']:.2f}")


if __name__ == "__main__":
    main()
