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
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIDES = ("duckdb", "as_written")


def child(db_path: str, side: str) -> dict:
    import corpusdb
    from corpusdb.scoring.job import INSTANCE_ROWS, READ_DOCS, place_documents, reader_as_written, stream_sql

    db = corpusdb.open(db_path)
    db.con.execute("set threads = 1")  # as the job reads
    cursor = db.con.cursor()
    place_documents(db, cursor)
    stream = stream_sql(INSTANCE_ROWS)  # the job's stream (`corpusdb.scoring.job.run_score`), for a model not scored yet
    started, cpu = time.perf_counter(), time.process_time()
    reader = (reader_as_written(db, cursor, stream, ["not-scored-yet"], READ_DOCS) if side == "as_written"
              else cursor.sql(stream, params=["not-scored-yet"]).to_arrow_reader(READ_DOCS))
    first, rows, checksum, text_bytes = None, 0, 0, 0
    for batch in reader:
        if first is None:
            first = time.perf_counter() - started
        rows += batch.num_rows
        ids = batch.column("doc_id").to_numpy()
        checksum = (checksum + int((ids.astype("uint64") * 0x9E3779B97F4A7C15).sum(dtype="uint64"))) % 2**64
        text_bytes += batch.column("text").nbytes
    return {"first_s": first or 0.0, "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, "rows": rows,
            "checksum": checksum, "text_gb": text_bytes / 1e9}


def run(db_path: str, side: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", side, db_path], capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="4000000", help="instances, or a comma-separated growth curve")
    parser.add_argument("--dir", type=Path, help="where the database of one size is built and kept (reused if there)")
    parser.add_argument("--keep", type=Path, help="folder where databases of every size are built and kept")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[1], args.child[0])))
        return
    from benchmarks.synthetic import build

    sizes = [int(float(x)) for x in args.n.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = args.dir if args.dir and len(sizes) == 1 else (args.keep or Path(tmp)) / f"instances-{n}"
            started = time.perf_counter()
            build(folder, n, "instances")
            print(f"\n{n:,} synthetic instances at {folder} ({time.perf_counter() - started:.0f} s to build or reuse)")
            print(f"{'join':12} {'first batch s':>13} {'all s':>7} {'cpu s':>7} {'RSS GB':>7}  rows")
            got = {side: run(str(folder), side) for side in SIDES}
            results[n] = got
            for side in SIDES:
                r = got[side]
                if "error" in r:
                    print(f"{side:12} error: {r['error']}")
                    continue
                print(f"{side:12} {r['first_s']:13.2f} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {r['rss_gb']:7.2f}  {r['rows']:,}")
            old, new = got["duckdb"], got["as_written"]
            if "error" not in old and "error" not in new:
                same = (old["rows"], old["checksum"]) == (new["rows"], new["checksum"])
                print(f"as written / DuckDB's plan: first batch {new['first_s'] / max(old['first_s'], 1e-9):.2f}x, all "
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
