"""The scoring job's reader: one DuckDB thread (what `corpusdb score` uses, so parts are cut in the
same order every run) against DuckDB's default threads, over the same stream of documents.

    python benchmarks/score_reader.py demo/db        # after `make demo`

The stream is the job's own query (every document, those already scored flagged, in the source's
order) read in record batches of 256 documents; nothing is scored. Measured on the demo database
(2 cores): one thread about 300 MB/s of text, 0.77x two threads, in one order every run (two
threads: 3 orders in 3 runs). The model reads far slower (SmolLM2-135M on 2 CPU cores: about 300
tokens/s, about 1 kB of text per second), so the single thread is not what a CPU job waits for.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpusdb  # noqa: E402
from corpusdb.scoring.job import READ_DOCS, _rechunk  # noqa: E402


def read(db: corpusdb.Database, threads: int) -> tuple[float, int, list]:
    db.con.execute(f"set threads = {threads}")
    query = ("select doc_id, n_bytes, case when done then null else text end as text, done from ("
             "select doc_id, n_bytes, text, doc_id in (select doc_id from scores where model = 'none') as done from documents)")
    started = time.perf_counter()
    n_bytes, order = 0, []
    for batch in _rechunk(db.con.cursor().sql(query).to_arrow_reader(READ_DOCS), READ_DOCS):
        n_bytes += sum(len(t.encode()) for t in batch.column("text").to_pylist() if t)
        order.extend(batch.column("doc_id").to_pylist())
    return time.perf_counter() - started, n_bytes, order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    db = corpusdb.open(args.db)
    (default,) = db.con.execute("select current_setting('threads')").fetchall()[0]
    orders = {1: set(), default: set()}
    for _ in range(args.repeat):
        for threads in (default, 1):
            seconds, n_bytes, order = read(db, threads)
            orders[threads].add(hash(tuple(order)))
            print(f"threads {threads}: {n_bytes / 1e6:.1f} MB of text in {seconds:.2f} s ({n_bytes / 1e6 / seconds:.0f} MB/s)")
    print(f"distinct stream orders over {args.repeat} runs: {len(orders[1])} with 1 thread, {len(orders[default])} with {default}")


if __name__ == "__main__":
    main()
