"""MinHash throughput: corpusdb's signature step vs. datasketch.MinHash.update per shingle, and clustering time.

    python benchmarks/minhash_throughput.py                    # demo/db if `make demo` ran, else the fixture
    python benchmarks/minhash_throughput.py --docs 2000 --cluster-docs 100000   # quicker

Signatures: the same real documents, num_perm 128, 5-word shingles, seed 1. Baseline: one
process, `datasketch.MinHash.update(shingle)` per shingle (the usual loop; hashfunc sha1_hash32,
datasketch's default). corpusdb: `MinHasher.signatures` in one process, and the whole
`corpusdb minhash` signature step (read parts, sign, write parts) with 2 worker processes.
Both use datasketch's affine32 permutations; the check below confirms corpusdb's `sha1` mode gives
datasketch's exact signatures on a sample, so the comparison is like for like.

Clustering: N synthetic 128-value signatures (10% of them near-copies of another, 1-10% of
values changed) clustered by the band join + connected components in DuckDB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from datasketch import MinHash  # noqa: E402

import corpusdb  # noqa: E402
from corpusdb.dedup.cluster import cluster, optimal_bands, verification_threshold  # noqa: E402
from corpusdb.dedup.minhash import MinHasher, shingles  # noqa: E402


def load_texts(docs: int) -> tuple[list[str], str]:
    demo = ROOT / "demo" / "db"
    if (demo / "corpusdb.json").exists():
        db, where = corpusdb.open(str(demo)), "demo/db"
    else:
        db = corpusdb.init(tempfile.mkdtemp())
        for path in sorted((ROOT / "tests/data/corpus").glob("*.jsonl")):
            db.ingest([str(path)], source=path.stem, progress=False)
        where = "the test fixture"
    texts = [t for (t,) in db.sql(f"select text from documents using sample {docs} rows (reservoir, 7)").fetchall()]
    return texts, where


def bench_signatures(texts: list[str], workers: int) -> None:
    n_shingles = sum(len(shingles(t, 5)) for t in texts)
    print(f"{len(texts):,} documents, {sum(len(t.encode()) for t in texts) / 1e6:.1f} MB, {n_shingles:,} shingles; num_perm 128")
    t0 = time.perf_counter()
    baseline = []
    for text in texts:
        m = MinHash(num_perm=128, seed=1)
        for shingle in shingles(text, 5):
            m.update(" ".join(shingle).encode("utf-8"))
        baseline.append(m.hashvalues)
    base_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    MinHasher().signatures(texts)
    one_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sha1 = MinHasher(hash="sha1").signatures(texts)
    sha1_s = time.perf_counter() - t0
    assert all(np.array_equal(a, b) for a, b in zip(baseline, sha1)), "sha1 mode differs from datasketch"

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        import json

        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        db = corpusdb.init(str(Path(tmp) / "db"))
        db.ingest([str(path)], source="bench", progress=False, part_size_mb=max(0.05, sum(map(len, texts)) / 8e6))
        n_parts = len(db.parts("documents"))
        report = db.minhash(workers=workers, progress=False)
        job_s = report.signature_seconds

    rows = [
        ("datasketch MinHash.update per shingle (baseline)", base_s),
        ("corpusdb MinHasher, sha1 hash, 1 process", sha1_s),
        ("corpusdb MinHasher, xxh3 hash, 1 process", one_s),
        (f"corpusdb minhash job, {workers} processes ({n_parts} parts)", job_s),
    ]
    print(f"{'run':56} {'seconds':>8} {'docs/s':>9} {'vs datasketch':>14}")
    for name, seconds in rows:
        print(f"{name:56} {seconds:8.2f} {len(texts) / seconds:9,.0f} {base_s / seconds:13.1f}x")
    print("(sha1 mode signatures are identical to datasketch's on every document)")


def bench_clustering(n: int) -> None:
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32 - 1, size=(n, 128), dtype=np.uint32)
    copies = rng.choice(n, n // 10, replace=False)
    sources = rng.integers(0, n, n // 10)
    for target, source in zip(copies, sources):
        signatures[target] = signatures[source]
        changed = rng.choice(128, rng.integers(1, 13), replace=False)
        signatures[target, changed] = rng.integers(0, 2**32 - 1, len(changed), dtype=np.uint32)
    ids = rng.permutation(np.arange(n, dtype=np.int64) * 2654435761 - 2**62)
    offsets = np.arange(0, (n + 1) * 128, 128, dtype=np.int64)
    table = pa.table({"doc_id": ids, "signature": pa.LargeListArray.from_arrays(offsets, pa.array(signatures.ravel()))})
    del signatures
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "signatures.parquet"
        pq.write_table(table, path)
        del table
        con = duckdb.connect()
        con.execute(f"create view signatures as select doc_id, signature::uinteger[] as signature from '{path}'")
        bands, rows = optimal_bands(0.8, 128)
        t0 = time.perf_counter()
        counts = cluster(con, "signatures", bands=bands, rows=rows, num_perm=128, verify_threshold=verification_threshold(0.8, 128))
        seconds = time.perf_counter() - t0
        clusters = con.execute("select count(distinct cluster_id) filter (where cluster_size > 1) from clusters").fetchall()[0][0]
    print(f"clustering {n:,} synthetic signatures ({bands} bands x {rows} rows, verified): {seconds:.1f} s, "
          f"{counts['n_candidate_pairs']:,} candidate pairs, {counts['n_edges']:,} edges, {counts['n_iterations']} iterations, "
          f"{clusters:,} clusters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=6000, help="real documents to sign")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cluster-docs", type=int, default=1_000_000, help="synthetic signatures to cluster (0: skip)")
    args = parser.parse_args()
    texts, where = load_texts(args.docs)
    print(f"documents from {where}")
    bench_signatures(texts, args.workers)
    if args.cluster_docs:
        bench_clustering(args.cluster_docs)


if __name__ == "__main__":
    main()
