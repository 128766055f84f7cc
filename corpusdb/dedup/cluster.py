"""Near-duplicate clusters from MinHash signatures: LSH banding, verified candidate pairs, connected components, in DuckDB.

    python benchmarks/minhash_throughput.py --cluster-docs 1000000   # clusters 1M synthetic signatures

Everything runs as SQL on a DuckDB connection, so the working set lives in DuckDB's buffer manager
(spilling to disk when it must) instead of a Python dict of buckets:

1. bands: each signature is cut into `bands` slices of `rows` values; a slice's hash is its bucket.
2. candidates: documents sharing a bucket in any band. A bucket of up to `max_bucket` documents
   gives all its pairs. A larger one (pages sharing a template, boilerplate) gives, for each
   member, the next `window` members in the order of the rest of their signatures, so members
   that share more values sit side by side: the join stays bounded at max(max_bucket, window)
   pairs per document and band, and no bucket links members it has not compared.
3. verification (`Verification`): a pair is an edge when its estimated Jaccard (the fraction of
   equal signature values) reaches the bar, and, in exact mode, when the true Jaccard of the two
   documents' shingle sets (a callable computes it) reaches the threshold. Pairs from large
   buckets are always verified on the estimate, so a template bucket cannot chain documents that
   only share the template.
4. clusters, by `method`:
   - `components` (default): connected components of the edges, by min-label propagation with
     pointer jumping until no label changes: near-duplicates of near-duplicates join, as in
     datatrove, text-dedup and NeMo Curator, so a chain of edits stays one cluster (and a
     cluster can hold pairs below the threshold);
   - `star`: every cluster is a center and documents with an edge to it, centers chosen greedily
     in doc_id order (`star_centers`): each removed document is a verified near-duplicate of the
     kept one, and no two kept documents have an edge.
   Either way `cluster_id` is the smallest doc_id of the cluster, so the result does not depend
   on the order of anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

EMPTY = 4294967295
WINDOW = 32  # in a bucket larger than max_bucket, each member meets the next WINDOW members in signature order
VERIFY_MODES = ("estimate", "exact", "off")
CLUSTER_METHODS = ("components", "star")
ESTIMATE_ERRORS = -0.5  # the default bar: threshold less this many standard errors of the estimate (here: plus half of one)
EXACT_PREFILTER_ERRORS = 4.0  # exact mode checks pairs whose estimate is within this many standard errors


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


def verification_threshold(threshold: float, num_perm: int, errors: float = ESTIMATE_ERRORS) -> float:
    """The threshold less `errors` standard errors of the MinHash estimate at it."""
    return threshold - errors * math.sqrt(threshold * (1.0 - threshold) / num_perm)


@dataclass(frozen=True)
class Verification:
    """Which candidate pairs become edges.

    estimate: keep pairs whose estimated Jaccard is at least this (None: keep every candidate of
        a small bucket, plain LSH).
    large: the estimate bar for pairs from buckets larger than max_bucket (never None).
    exact: (pairs (k, 2) int64) -> true Jaccard (k,) of each pair's shingle sets; pairs below
        `threshold` are dropped. None: no exact check.
    """

    estimate: float | None
    large: float
    exact: Callable[[np.ndarray], np.ndarray] | None = None
    threshold: float = 0.0

    @classmethod
    def of(cls, mode: str | bool, threshold: float, num_perm: int, exact: Callable[[np.ndarray], np.ndarray] | None = None
           ) -> Verification:
        """The verification of a `--verify` mode: estimate (default), exact (needs `exact`) or off."""
        mode = verify_mode(mode)
        bar = verification_threshold(threshold, num_perm)
        if mode == "exact":
            if exact is None:
                raise ValueError("exact verification needs the documents' text")
            loose = verification_threshold(threshold, num_perm, EXACT_PREFILTER_ERRORS)
            return cls(estimate=loose, large=loose, exact=exact, threshold=threshold)
        return cls(estimate=bar if mode == "estimate" else None, large=bar, threshold=threshold)


def verify_mode(value: str | bool) -> str:
    """A `verify` setting as a mode name (True and False were the settings before exact mode)."""
    if value is True:
        return "estimate"
    if value is False:
        return "off"
    if value not in VERIFY_MODES:
        raise ValueError(f"verify {value!r} is not one of {', '.join(VERIFY_MODES)}")
    return value


def cluster(con: duckdb.DuckDBPyConnection, signatures: str, *, bands: int, rows: int, num_perm: int,
            verification: Verification, max_bucket: int = 256, window: int = WINDOW, method: str = "components") -> dict:
    """Create temp table `clusters(doc_id, cluster_id, cluster_size)` from the relation `signatures`.

    Args:
        signatures: a table or view name with columns doc_id BIGINT, signature UINTEGER[].
        bands, rows: LSH banding; bands * rows <= num_perm.
        verification: which candidate pairs become edges.
        max_bucket: buckets larger than this pair each member with its `window` neighbours in
            signature order instead of with all members.
        method: "components" or "star" (see the module's docstring).

    Returns:
        counts: candidate pairs (of which from large buckets), pairs checked exactly, edges,
        iterations, documents in clusters.
    """
    if bands < 1 or rows < 1 or bands * rows > num_perm:
        raise ValueError(f"bands {bands} x rows {rows} must be at least 1 x 1 and use at most num_perm = {num_perm} values")
    if method not in CLUSTER_METHODS:
        raise ValueError(f"cluster method {method!r} is not one of {', '.join(CLUSTER_METHODS)}")
    if max_bucket < 2 or window < 1:
        raise ValueError(f"max_bucket ({max_bucket}) must be at least 2 and window ({window}) at least 1")
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
        select band, bucket, count(*) as n from _bands group by band, bucket having count(*) > 1
    """)
    # small buckets: all pairs; large ones: each member and its next `window` members in the order of
    # the signature values after the band (rotated), ties by doc_id
    run(f"""
        create or replace temp table _candidates as
        with small as (
            select b.doc_id, b.band, b.bucket from _bands b
            join _buckets k using (band, bucket) where k.n <= {max_bucket}
        ),
        small_pairs as (
            select x.doc_id as a, y.doc_id as b, false as large
            from small x join small y on x.band = y.band and x.bucket = y.bucket and x.doc_id < y.doc_id
        ),
        big as (
            select b.doc_id, b.band, b.bucket,
                   row_number() over (
                       partition by b.band, b.bucket
                       order by list_concat(list_slice(s.signature, (b.band + 1) * {rows} + 1, {num_perm}),
                                            list_slice(s.signature, 1, (b.band + 1) * {rows})), b.doc_id
                   ) as position
            from _bands b join _buckets k using (band, bucket) join {signatures} s on s.doc_id = b.doc_id
            where k.n > {max_bucket}
        ),
        big_pairs as (
            select least(x.doc_id, y.doc_id) as a, greatest(x.doc_id, y.doc_id) as b, true as large
            from big x cross join range(1, {window + 1}) o(k)
            join big y on y.band = x.band and y.bucket = x.bucket and y.position = x.position + o.k
        )
        select a, b, bool_and(large) as large from (select * from small_pairs union all select * from big_pairs)
        group by a, b
    """)
    n_candidates, n_large = run("select count(*), count(*) filter (where large) from _candidates").fetchall()[0]
    estimate = -1.0 if verification.estimate is None else verification.estimate
    run(f"""
        create or replace temp table _kept as
        select c.a, c.b from _candidates c
        join {signatures} sa on sa.doc_id = c.a
        join {signatures} sb on sb.doc_id = c.b
        where list_count(list_filter(list_zip(sa.signature, sb.signature), lambda v: v[1] = v[2]))
              >= (case when c.large then {float(verification.large)!r}::double else {float(estimate)!r}::double end) * {num_perm}
    """)
    n_checked = 0
    if verification.exact is not None:
        pairs = run("select a, b from _kept order by a, b").fetchnumpy()
        pairs = np.stack([pairs["a"], pairs["b"]], axis=1).astype(np.int64) if len(pairs["a"]) else np.empty((0, 2), np.int64)
        n_checked = len(pairs)
        similar = verification.exact(pairs) >= verification.threshold if len(pairs) else np.zeros(0, dtype=bool)
        accepted = pa.table({"a": pa.array(pairs[similar, 0], pa.int64()), "b": pa.array(pairs[similar, 1], pa.int64())})
        con.register("_accepted", accepted)
        run("create or replace temp table _kept as select a, b from _accepted")
        con.unregister("_accepted")
    if method == "star":
        kept = run("select a, b from _kept").fetchnumpy()
        pairs = np.stack([kept["a"], kept["b"]], axis=1).astype(np.int64) if len(kept["a"]) else np.empty((0, 2), np.int64)
        n_edges, iterations = len(pairs), 0
        nodes, centers = star_centers(pairs)
        con.register("_centers", pa.table({"node": pa.array(nodes, pa.int64()), "label": pa.array(centers, pa.int64())}))
        run("create or replace temp table _labels as select * from _centers")
        con.unregister("_centers")
    else:
        n_edges, iterations = _components(con)
    run(f"""
        create or replace temp table clusters as
        with labelled as (
            select s.doc_id, coalesce(l.label, s.doc_id) as cluster_id
            from {signatures} s left join _labels l on l.node = s.doc_id
        )
        select doc_id, cluster_id, count(*) over (partition by cluster_id) as cluster_size from labelled
    """)
    in_clusters = run("select count(*) from clusters where cluster_size > 1").fetchall()[0][0]
    for table in ("_bands", "_buckets", "_candidates", "_kept", "_edges", "_labels", "_next"):
        run(f"drop table if exists {table}")
    return {"n_candidate_pairs": n_candidates, "n_large_bucket_pairs": n_large, "n_exact_checks": n_checked,
            "n_edges": n_edges, "n_iterations": iterations, "n_documents_in_clusters": in_clusters}


def star_centers(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, their cluster's center) from verified pairs: every cluster is a center and documents
    with a verified edge to it. Greedy in doc_id order: a document no smaller center claimed
    becomes a center and claims its unclaimed neighbours, so the center is its cluster's smallest
    doc_id and a result never depends on the order of anything else."""
    if not len(pairs):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    directed = np.concatenate([pairs, pairs[:, ::-1]])
    nodes, index = np.unique(directed[:, 0], return_inverse=True)
    neighbour = np.searchsorted(nodes, directed[:, 1])
    order = np.argsort(index, kind="stable")
    neighbours = neighbour[order]
    bounds = np.searchsorted(index[order], np.arange(len(nodes) + 1))
    center = np.full(len(nodes), -1, dtype=np.int64)
    for node in range(len(nodes)):  # nodes ascend by doc_id
        if center[node] >= 0:
            continue
        center[node] = node
        claim = neighbours[bounds[node] : bounds[node + 1]]
        claim = claim[center[claim] < 0]
        center[claim] = node
    return nodes, nodes[center]


def _components(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Connected components of the `_kept` pairs into `_labels(node, label)`: min-label propagation
    with pointer jumping. Returns (edges, iterations)."""
    run = con.execute
    run("create or replace temp table _edges as select a, b from _kept union all select b, a from _kept")
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
            return n_edges, iterations
