"""MinHash clustering on a heavily duplicated corpus: time and peak memory against a numpy/scipy union-find.

    python benchmarks/cluster_memory.py                                    # 1.69M signatures, 120 copies of each text
    python benchmarks/cluster_memory.py --docs 200000 --copies 50 --memory-limit 512MB,none   # quicker

The case that once ran for 778 s and 13 GB before it was stopped (issue 24, item 7): every text
about `--copies` times, each copy a little different (a small prefix changes a few signature
values). Signatures are made with numpy (`--changed` of the 128 values redrawn per copy, so the
estimated Jaccard of two copies is about 1 - 2 * changed), written as one Parquet file, and
clustered in a fresh process each:

- corpusdb: `corpusdb.dedup.cluster.cluster` (the band join, verified on the estimate, connected
  components), the same call `corpusdb minhash` makes, under each `--memory-limit` (DuckDB's limit;
  `none` keeps DuckDB's default of 80% of RAM);
- baseline: what a user writes with numpy and scipy: each band's buckets by `np.unique`, every
  member linked to its bucket's first member (no verification: the cheapest LSH clustering there
  is), `scipy.sparse.csgraph.connected_components`.

Each prints CPU seconds, wall seconds and peak RSS (`/usr/bin/time -v`), and corpusdb's ratio to
the baseline; the two clusterings are compared pair for pair (corpusdb verifies, so it may split
what plain LSH joins, never the reverse on this data).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NUM_PERM, BANDS, ROWS = 128, 14, 9  # corpusdb's banding at 0.8 for `--verify estimate` (synthetic signatures: no texts)


def make_signatures(path: Path, docs: int, copies: int, changed: float, seed: int = 0) -> int:
    """`docs` signatures in groups of `copies` near-copies, written to `path` in slices; returns the group count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    groups = -(-docs // copies)
    ids = rng.permutation(np.arange(docs, dtype=np.int64) * 7919 + 1)  # distinct, unordered doc_ids
    schema = pa.schema([("doc_id", pa.int64()), ("signature", pa.list_(pa.uint32()))])
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, groups, 2000):
            g = min(2000, groups - start)
            base = rng.integers(0, 2**32 - 2, (g, NUM_PERM), dtype=np.uint32)
            sig = np.repeat(base, copies, axis=0)
            redraw = rng.random(sig.shape) < changed
            sig[redraw] = rng.integers(0, 2**32 - 2, int(redraw.sum()), dtype=np.uint32)
            first = start * copies
            n = min(len(sig), docs - first)
            if n <= 0:
                break
            values = pa.array(sig[:n].reshape(-1))
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * NUM_PERM)
            writer.write_table(pa.table({"doc_id": ids[first:first + n],
                                         "signature": pa.ListArray.from_arrays(offsets, values)}, schema=schema))
    return groups


def run_corpusdb(path: str, memory_limit: str | None, out: str) -> dict:
    import duckdb

    from corpusdb.dedup.cluster import Verification, cluster

    con = duckdb.connect()
    con.execute(f"set temp_directory = '{out}/spill'")
    counts = cluster(con, f"read_parquet('{path}')", bands=BANDS, rows=ROWS, num_perm=NUM_PERM,
                     verification=Verification.of("estimate", 0.8, NUM_PERM), memory_limit=memory_limit)
    con.execute(f"copy (select doc_id, cluster_id from clusters) to '{out}/corpusdb.parquet' (format parquet)")
    return counts


def run_baseline(path: str, out: str) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    table = pq.read_table(path)
    ids = table.column("doc_id").to_numpy()
    sig = table.column("signature").combine_chunks().values.to_numpy().reshape(len(ids), NUM_PERM)
    del table
    n, sources, targets = len(ids), [], []
    for band in range(BANDS):
        block = np.ascontiguousarray(sig[:, band * ROWS:(band + 1) * ROWS])
        _, first, bucket = np.unique(block.view(np.dtype((np.void, block.dtype.itemsize * ROWS))).ravel(),
                                     return_index=True, return_inverse=True)
        root = first[bucket]  # each member's bucket's first member
        linked = root != np.arange(n)
        sources.append(np.flatnonzero(linked))
        targets.append(root[linked])
    edges_from, edges_to = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(len(edges_from), np.int8), (edges_from, edges_to)), shape=(n, n))
    n_components, labels = connected_components(graph, directed=False)
    # a cluster's id is its smallest doc_id, as corpusdb's
    smallest = np.full(n_components, np.iinfo(np.int64).max)
    np.minimum.at(smallest, labels, ids)
    pq.write_table(pa.table({"doc_id": ids, "cluster_id": smallest[labels]}), f"{out}/baseline.parquet")
    return {"n_edges": int(len(edges_from))}


def child(side: str, path: str, memory_limit: str | None, out: str) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks import cluster_memory as m; "
            f"import time; t = time.process_time(); w = time.perf_counter(); "
            f"r = m.run_{side}({path!r}, {memory_limit!r}, {out!r}) if {side!r} == 'corpusdb' else m.run_baseline({path!r}, {out!r}); "
            f"print('RESULT', json.dumps({{**r, 'cpu_s': time.process_time() - t, 'wall_s': time.perf_counter() - w}}))")
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][7:])
    peak = next(line for line in proc.stderr.splitlines() if "Maximum resident set size" in line)
    result["rss_gb"] = int(peak.split(":")[1]) / 1e6
    return result


def agreement(out: str) -> dict:
    """Pairs in one cluster: how many corpusdb and the baseline share (counted per cluster pair of sizes)."""
    import duckdb

    con = duckdb.connect()
    together = lambda f: f"(select cluster_id, count(*) as n from read_parquet('{out}/{f}') group by 1)"  # noqa: E731
    ours, theirs = (con.sql(f"select sum(n * (n - 1) // 2) from {together(f)}").fetchall()[0][0]
                    for f in ("corpusdb.parquet", "baseline.parquet"))
    both = con.sql(f"""select sum(n * (n - 1) // 2) from (select count(*) as n from read_parquet('{out}/corpusdb.parquet') c
                       join read_parquet('{out}/baseline.parquet') b using (doc_id) group by c.cluster_id, b.cluster_id)""").fetchall()[0][0]
    return {"pairs_corpusdb": int(ours or 0), "pairs_baseline": int(theirs or 0), "pairs_both": int(both or 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_690_000)
    parser.add_argument("--copies", type=int, default=120, help="near-copies of each text")
    parser.add_argument("--changed", type=float, default=0.02, help="fraction of a copy's signature values redrawn")
    parser.add_argument("--memory-limit", default="1GB,none", help="comma-separated DuckDB limits for corpusdb ('none': default)")
    parser.add_argument("--dir", type=Path, help="work folder (kept); default: a temporary one")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="corpusdb-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        path = work / "signatures.parquet"
        started = time.perf_counter()
        groups = make_signatures(path, args.docs, args.copies, args.changed)
        print(f"{args.docs:,} signatures in {groups:,} groups of {args.copies} near-copies "
              f"({args.changed:.0%} of values redrawn; {time.perf_counter() - started:.0f} s to make)")
        base = child("baseline", str(path), None, str(work))
        print(f"{'run':38} {'cpu s':>8} {'wall s':>8} {'RSS GB':>7} {'cpu x':>6} {'RSS x':>6}  notes")
        print(f"{'numpy bands + scipy components':38} {base['cpu_s']:8.1f} {base['wall_s']:8.1f} {base['rss_gb']:7.2f} "
              f"{1:6.2f} {1:6.2f}  {base['n_edges']:,} edges, no verification", flush=True)
        for limit in args.memory_limit.split(","):
            limit = None if limit == "none" else limit
            shutil.rmtree(work / "spill", ignore_errors=True)
            ours = child("corpusdb", str(path), limit, str(work))
            agree = agreement(str(work))
            print(f"{'corpusdb cluster, limit ' + (limit or 'default'):38} {ours['cpu_s']:8.1f} {ours['wall_s']:8.1f} "
                  f"{ours['rss_gb']:7.2f} {ours['cpu_s'] / base['cpu_s']:6.2f} {ours['rss_gb'] / base['rss_gb']:6.2f}  "
                  f"{ours['n_candidate_pairs']:,} pairs compared, {ours['n_edges']:,} edges; same-cluster pairs "
                  f"{agree['pairs_both']:,} of corpusdb's {agree['pairs_corpusdb']:,} and the baseline's "
                  f"{agree['pairs_baseline']:,}", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
