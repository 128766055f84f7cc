"""MinHash throughput: corpusdb vs. datasketch and rensa, signatures and end to end.

    python benchmarks/minhash_throughput.py                    # demo/db if `make demo` ran, else the fixture
    python benchmarks/minhash_throughput.py --docs 2000 --cluster-docs 100000 --end-to-end 100000   # quicker
    python benchmarks/minhash_throughput.py --docs 0 --cluster-docs 0 --end-to-end 1000000          # the 1M row
    python benchmarks/minhash_throughput.py --docs 0 --cluster-docs 0 --end-to-end 0 --near-threshold 100

End to end (`--end-to-end N`): N documents of about 600 bytes (real text cut into pieces), each
tool from texts to near-duplicate clusters at threshold 0.8 with 128 permutations and 5-word
shingles. corpusdb: the `corpusdb minhash` job (signatures on --workers processes, then clusters;
ingest not counted), with exact verification (the default) and with `--verify estimate` (the
signatures once, their time in both rows). rensa (Rust, one process, from PyPI; benchmark only): shingles in Python,
`RMinHash` digests, `RMinHashLSH` with 16 bands (it needs a divisor of 128), candidates kept at estimated Jaccard >= 0.8,
union-find. rensa's signatures are its own, not datasketch's.

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
from corpusdb.dedup.cluster import Verification, cluster, optimal_bands  # noqa: E402
from corpusdb.dedup.minhash import MinHasher, shingles, words  # noqa: E402
from benchmarks.dedup_quality import union_find_labels  # noqa: E402


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


def end_to_end(n: int, workers: int) -> None:
    import json
    import resource

    pool, _ = load_texts(20000)
    pieces = [t[i : i + 600] for t in pool for i in range(0, len(t), 600)]
    texts = [f"{pieces[i % len(pieces)]} {i}" for i in range(n)]  # every text distinct; pieces repeat: real duplicates
    print(f"end to end: {n:,} documents, {sum(map(len, texts)) / 1e6:.0f} MB, threshold 0.8, 128 permutations")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        with path.open("w") as f:
            for text in texts:
                f.write(json.dumps({"text": text}) + "\n")
        db = corpusdb.init(str(Path(tmp) / "db"))
        db.ingest([str(path)], source="bench", progress=False)
        rows = []
        t0 = time.perf_counter()
        signed = db.minhash(workers=workers, progress=False, cluster_when_done=False)
        signing = time.perf_counter() - t0
        for verify in ("exact", "estimate"):  # the default first; the same signatures re-clustered
            t0 = time.perf_counter()
            report = db.minhash(workers=workers, progress=False, verify=verify)
            seconds = signing + time.perf_counter() - t0
            counts = report.cluster_counts
            rows.append((f"corpusdb minhash --verify {verify} ({workers} proc.)", seconds, report.n_clusters,
                         f"signatures {signed.signature_seconds:.1f} s, clusters {report.cluster_seconds:.1f} s "
                         f"({report.bands}x{report.rows}, {counts.get('n_candidate_pairs', 0):,} candidates, "
                         f"{counts.get('n_exact_checks', 0):,} exact checks)"))
    ours_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        from rensa import RMinHash, RMinHashLSH
    except ImportError:
        print("rensa is not installed (pip install rensa): corpusdb only")
        RMinHash = None
    if RMinHash is not None:
        t0 = time.perf_counter()
        lsh = RMinHashLSH(threshold=0.8, num_perm=128, num_bands=16)
        hashes = []
        for i, text in enumerate(texts):
            w = words(text)
            m = RMinHash(num_perm=128, seed=1)
            m.update([" ".join(w[j : j + 5]) for j in range(max(1, len(w) - 4))] if w else [])
            lsh.insert(i, m)
            hashes.append(m)
        pairs = ((i, j) for i, m in enumerate(hashes) for j in lsh.query(m) if j > i and m.jaccard(hashes[j]) >= 0.8)
        roots = union_find_labels(n, pairs)
        clusters = sum(1 for r, c in zip(*np.unique(roots, return_counts=True)) if c > 1)
        rows.append(("rensa RMinHash + RMinHashLSH (1 process)", time.perf_counter() - t0, clusters, ""))
    print(f"{'run':44} {'seconds':>8} {'docs/s':>9} {'clusters':>9} {'vs rensa':>9}")
    base = rows[-1][1]
    for name, seconds, clusters, note in rows:
        print(f"{name:44} {seconds:8.1f} {n / seconds:9,.0f} {clusters:9,} {base / seconds:8.2f}x  {note}")
    print(f"(peak memory of this process after corpusdb: {ours_rss:,.0f} MB; corpusdb's workers are separate processes)")


def near_threshold(groups: int, copies: int, workers: int) -> None:
    """Heavy near-threshold duplication: `groups` texts of 150 words, each in `copies` copies with 3
    words substituted (pairwise Jaccard about 0.66, near the estimate's band): exact vs estimate,
    and the documents in clusters against the truth (exact Jaccard of every pair)."""
    import json
    import random

    from tests.web_pages import pair_jaccard

    rng = random.Random(0)
    pool, _ = load_texts(20000)
    bases = [w for w in (words(t) for t in pool) if len(w) >= 150]
    vocabulary = sorted({w for t in bases[:50] for w in t})
    texts = []
    for g in range(groups):
        base = bases[g % len(bases)][:150] + [f"g{g}"]
        for c in range(copies):
            copy = list(base)
            for _ in range(3):
                copy[rng.randrange(len(copy))] = rng.choice(vocabulary)
            texts.append(" ".join(copy) + f" c{c}")
    truth = {i for pair, value in pair_jaccard(texts).items() if value >= 0.8 for i in pair}
    print(f"near-threshold duplication: {groups} texts x {copies} copies; {len(truth):,} documents have a pair at J >= 0.8")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        db = corpusdb.init(str(Path(tmp) / "db"))
        db.ingest([str(path)], source="bench", progress=False)
        db.minhash(workers=workers, progress=False, cluster_when_done=False)
        base = None
        for verify in ("estimate", "exact"):
            report = db.minhash(workers=workers, progress=False, verify=verify)
            base = base or report.cluster_seconds
            print(f"  --verify {verify:8} clusters {report.cluster_seconds:6.1f} s ({report.cluster_seconds / base:.2f}x the estimate), "
                  f"{report.cluster_counts['n_documents_in_clusters']:,} documents in clusters, "
                  f"{report.cluster_counts.get('n_exact_checks', 0):,} exact checks")


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
        counts = cluster(con, "signatures", bands=bands, rows=rows, num_perm=128,
                         verification=Verification.of("estimate", 0.8, 128))
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
    parser.add_argument("--end-to-end", type=int, default=200_000, help="documents for corpusdb vs rensa end to end (0: skip)")
    parser.add_argument("--near-threshold", type=int, default=0, help="groups of 120 copies near the threshold (0: skip)")
    args = parser.parse_args()
    if args.near_threshold:
        near_threshold(args.near_threshold, 120, args.workers)
    if args.docs:
        texts, where = load_texts(args.docs)
        print(f"documents from {where}")
        bench_signatures(texts, args.workers)
    if args.end_to_end:
        end_to_end(args.end_to_end, args.workers)
    if args.cluster_docs:
        bench_clustering(args.cluster_docs)


if __name__ == "__main__":
    main()
