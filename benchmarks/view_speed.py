"""The difference views over N synthetic scored documents vs. polars computing the same join + top-k (or cut).

    python benchmarks/view_speed.py                 # 10M documents (about 1 GB of Parquet in a temp folder)
    python benchmarks/view_speed.py --docs 1000000

Both read the same Parquet files (a corpusdb database: documents, scores/model=teacher,
scores/model=reference), compute score = (teacher - reference) / n_bytes, keep the top
ceil(alpha * N) by score (ties by doc_id) and materialise the kept rows with every documents
column as an Arrow table, in no particular order. The check below confirms both keep the same
doc_ids. The polars side is written for speed (one collect, then `top_k`, which beat
`sort().head()` by 5x here). `difference_bytes` (the same ranking cut at alpha of the bytes) needs
the running sum of bytes in rank order: polars sorts and takes `cum_sum`. Each is run --repeat
times; the best time counts.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import corpusdb  # noqa: E402


def make_database(folder: Path, n: int) -> corpusdb.Database:
    rng = np.random.default_rng(0)
    ids = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    n_bytes = rng.integers(50, 20000, n).astype(np.int64)
    corpusdb.init(str(folder))
    sources = np.array(["web", "books", "code", "wiki"])[rng.integers(0, 4, n)]
    step = 2_000_000
    (folder / "documents").mkdir(exist_ok=True)
    for i, start in enumerate(range(0, n, step)):
        part = slice(start, start + step)
        texts = pa.array([f"doc {j}" for j in range(start, min(start + step, n))])
        pq.write_table(pa.table({"doc_id": ids[part], "source": sources[part], "text": texts, "n_bytes": n_bytes[part]}),
                       folder / "documents" / f"part-{i:05d}.parquet")
    for model, scale in (("teacher", 1.0), ("reference", 1.3)):
        path = folder / "scores" / f"model={model}"
        path.mkdir(parents=True)
        logprob = -(n_bytes * scale * rng.uniform(0.5, 1.5, n))
        pq.write_table(pa.table({"doc_id": ids, "sum_logprob": logprob, "n_tokens": n_bytes // 4, "n_bytes": n_bytes}),
                       path / "part-00000.parquet")
    db = corpusdb.open(str(folder))
    db.register_parts("documents", [str(p) for p in sorted((folder / "documents").glob("*.parquet"))])
    models = {m: {"model": f"synthetic/{m}", "content_hash": m, "tokenizer_hash": "synthetic"} for m in ("teacher", "reference")}
    db.register_parts("scores", [str(p) for p in sorted((folder / "scores").rglob("*.parquet"))], models=models)
    return db


def run_corpusdb(db: corpusdb.Database, alpha: float) -> pa.Table:
    return db.sql(f"select * from difference('teacher', 'reference', alpha := {alpha})").to_arrow_table()


def run_corpusdb_bytes(db: corpusdb.Database, alpha: float) -> pa.Table:
    return db.sql(f"select * from difference_bytes('teacher', 'reference', alpha := {alpha})").to_arrow_table()


def polars_scored(folder: Path) -> pl.DataFrame:
    docs = pl.scan_parquet(str(folder / "documents" / "*.parquet"))
    teacher = pl.scan_parquet(str(folder / "scores/model=teacher/*.parquet"), hive_partitioning=False).select(
        "doc_id", pl.col("sum_logprob").alias("teacher_logprob"))
    reference = pl.scan_parquet(str(folder / "scores/model=reference/*.parquet"), hive_partitioning=False).select(
        "doc_id", pl.col("sum_logprob").alias("reference_logprob"))
    scored = (
        docs.join(teacher, on="doc_id").join(reference, on="doc_id")
        .with_columns(((pl.col("teacher_logprob") - pl.col("reference_logprob")) / pl.col("n_bytes")).alias("score"))
        .drop_nulls("score")
        .collect()
    )
    return scored


def run_polars(folder: Path, alpha: float) -> pa.Table:
    """The same selection in polars, written for speed: one collect, then an O(n) top-k."""
    scored = polars_scored(folder)
    k = math.ceil(alpha * scored.height)
    # top by score, ties to the smaller doc_id (reverse=True on doc_id), as the view does
    return scored.top_k(k, by=["score", "doc_id"], reverse=[False, True]).to_arrow()


def run_polars_bytes(folder: Path, alpha: float) -> pa.Table:
    """difference_bytes in polars: rank order, bytes before each document, cut under alpha of all bytes."""
    scored = polars_scored(folder)
    budget = alpha * scored["n_bytes"].sum()
    ranked = scored.sort(["score", "doc_id"], descending=[True, False])
    before = pl.col("n_bytes").cum_sum() - pl.col("n_bytes")
    return ranked.filter(before < budget).to_arrow()


def best_of(repeat: int, func) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000_000)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "db"
        t0 = time.perf_counter()
        db = make_database(folder, args.docs)
        print(f"{args.docs:,} synthetic documents with teacher and reference scores written in {time.perf_counter() - t0:.1f} s")
        print(f"{'run':48} {'seconds':>8} {'vs polars':>10}")
        for view, ours_run, polars_run, baseline in (
            ("difference", run_corpusdb, run_polars, "join + top_k"),
            ("difference_bytes", run_corpusdb_bytes, run_polars_bytes, "join + sort + cum_sum"),
        ):
            ours_s, ours = best_of(args.repeat, lambda: ours_run(db, args.alpha))  # noqa: B023
            polars_s, theirs = best_of(args.repeat, lambda: polars_run(folder, args.alpha))  # noqa: B023
            same = np.array_equal(np.sort(ours.column("doc_id").to_numpy()), np.sort(theirs.column("doc_id").to_numpy()))
            print(f"{'polars: ' + baseline + ' (baseline)':48} {polars_s:8.2f} {1.0:9.2f}x")
            print(f"{'corpusdb: ' + view + ' view (DuckDB)':48} {ours_s:8.2f} {ours_s / polars_s:9.2f}x")
            print(f"  kept {ours.num_rows:,} documents; the same documents as polars: {same}")


if __name__ == "__main__":
    main()
