"""Near-duplicate clusters from MinHash signatures: LSH banding, candidate pairs, connected components, in DuckDB.

    python benchmarks/minhash_throughput.py --cluster-docs 1000000   # clusters 1M synthetic signatures

Everything runs as SQL on a DuckDB connection, so the working set lives in DuckDB's buffer manager
(spilling to disk when it must) instead of a Python dict of buckets:

1. bands: each signature is cut into `bands` slices of `rows` values; a slice's hash is its bucket.
2. candidates: documents sharing a bucket in any band. Buckets of up to `max_bucket` documents give
   all their pairs, verified when `verify_threshold` is set (estimated Jaccard, the fraction of
   equal signature values, at least that); a larger bucket links every member to its smallest
   doc_id without verification (such buckets are boilerplate that is near-identical anyway),
   which bounds the join at max_bucket pairs per document and band.
3. components: min-label propagation with pointer jumping until no label changes; every
   document's `cluster_id` is the smallest doc_id of its component, so the result does not depend
   on the order of anything.
"""

from __future__ import annotations

import math

import duckdb

EMPTY = 4294967295


def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.1,
                  false_negative_weight: float = 0.9) -> tuple[int, int]:
    """datasketch's optimal (bands, rows) for the threshold; weighted to favour recall by default.

    Candidates are verified afterwards, so a false positive costs a comparison while a false
    negative loses a duplicate for good.
    """
    from datasketch.lsh import _optimal_param

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold {threshold} must be between 0 and 1 (a Jaccard similarity)")
    return _optimal_param(threshold, num_perm, false_positive_weight, false_negative_weight)


def verification_threshold(threshold: float, num_perm: int) -> float:
    """The threshold less two standard errors of the MinHash estimate at it, so true pairs at the
    threshold are kept (about 98%) while pairs far below it are not."""
    return threshold - 2.0 * math.sqrt(threshold * (1.0 - threshold) / num_perm)


def cluster(con: duckdb.DuckDBPyConnection, signatures: str, *, bands: int, rows: int, num_perm: int,
            verify_threshold: float | None, max_bucket: int = 256) -> dict:
    """Create temp table `clusters(doc_id, cluster_id, cluster_size)` from the relation `signatures`.

    Args:
        signatures: a table or view name with columns doc_id BIGINT, signature UINTEGER[].
        bands, rows: LSH banding; bands * rows <= num_perm.
        verify_threshold: keep a candidate pair only if its estimated Jaccard is at least this.
        max_bucket: buckets larger than this link to their smallest member instead of all pairs.

    Returns:
        counts: candidate pairs, verified edges, iterations, documents in clusters.
    """
    if bands < 1 or rows < 1 or bands * rows > num_perm:
        raise ValueError(f"bands {bands} x rows {rows} must be at least 1 x 1 and use at most num_perm = {num_perm} values")
    run = con.execute
    run(f"""
        create or replace temp table _bands as
        with s as (
            select doc_id, signature from {signatures} where list_min(signature) < {EMPTY}
        )
        select doc_id, band, hash(list_slice(signature, band * {rows} + 1, (band + 1) * {rows})) as bucket
        from s, range({bands}) t(band)
    """)
    run("""
        create or replace temp table _buckets as
        select band, bucket, count(*) as n, min(doc_id) as smallest
        from _bands group by band, bucket having count(*) > 1
    """)
    run(f"""
        create or replace temp table _pairs as
        with members as (
            select b.doc_id, b.band, b.bucket from _bands b
            join _buckets k using (band, bucket) where k.n <= {max_bucket}
        )
        select distinct x.doc_id as a, y.doc_id as b
        from members x join members y on x.band = y.band and x.bucket = y.bucket and x.doc_id < y.doc_id
    """)
    n_candidates = run("select count(*) from _pairs").fetchall()[0][0]
    verify = ""
    if verify_threshold is not None:
        verify = f"""
            where list_count(list_filter(list_zip(sa.signature, sb.signature), lambda v: v[1] = v[2]))
                  >= {verify_threshold} * {num_perm}
        """
    run(f"""
        create or replace temp table _edges as
        with verified as (
            select p.a, p.b from _pairs p
            join {signatures} sa on sa.doc_id = p.a
            join {signatures} sb on sb.doc_id = p.b
            {verify}
        ),
        star as (
            select distinct b.doc_id as a, k.smallest as b from _bands b
            join _buckets k using (band, bucket) where k.n > {max_bucket} and b.doc_id <> k.smallest
        ),
        undirected as (select a, b from verified union select a, b from star)
        select a, b from undirected union all select b, a from undirected
    """)
    n_edges = run("select count(*) // 2 from _edges").fetchall()[0][0]
    run("create or replace temp table _labels as select a as node, least(a, min(b)) as label from _edges group by a")
    iterations = 0
    while True:
        iterations += 1
        run("""
            create or replace temp table _next as
            with neighbour as (
                select e.a as node, min(l.label) as label from _edges e join _labels l on l.node = e.b group by e.a
            ),
            spread as (
                select l.node, least(l.label, n.label) as label from _labels l join neighbour n using (node)
            )
            select s.node, least(s.label, j.label) as label from spread s join spread j on j.node = s.label
        """)
        changed = run("select count(*) from _next join _labels using (node) where _next.label <> _labels.label").fetchall()[0][0]
        run("create or replace temp table _labels as select * from _next")
        if not changed:
            break
    run(f"""
        create or replace temp table clusters as
        with labelled as (
            select s.doc_id, coalesce(l.label, s.doc_id) as cluster_id
            from {signatures} s left join _labels l on l.node = s.doc_id
        )
        select doc_id, cluster_id, count(*) over (partition by cluster_id) as cluster_size from labelled
    """)
    in_clusters = run("select count(*) from clusters where cluster_size > 1").fetchall()[0][0]
    for table in ("_bands", "_buckets", "_pairs", "_edges", "_labels", "_next"):
        run(f"drop table if exists {table}")
    return {"n_candidate_pairs": n_candidates, "n_edges": n_edges, "n_iterations": iterations, "n_documents_in_clusters": in_clusters}
