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
3. verification (`Verification`): in exact mode (the default of `corpusdb minhash`) a pair is an
   edge when the true Jaccard of the two documents' shingle sets (a callable computes it) reaches
   the threshold; only pairs whose estimate (the fraction of equal signature values) is between
   three standard errors below and four above the threshold are computed, those above are edges
   and those below are not (a pair at the threshold falls below with probability 0.0013). In estimate mode a pair is an edge when its estimate reaches the bar. Pairs from
   large buckets are always verified on the estimate first, so a template bucket cannot chain
   documents that only share the template.
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
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from corpusdb.db import set_memory_limit

EMPTY = 4294967295
CHAIN = 2  # components mode: each member of a bucket first meets its next CHAIN members in signature order
EXACT_BATCH = 262_144  # pairs checked on their true Jaccard at a time
WINDOW = 32  # in a bucket larger than max_bucket, each member meets the next WINDOW members in signature order
VERIFY_MODES = ("estimate", "exact", "off")
CLUSTER_METHODS = ("components", "star")
ESTIMATE_ERRORS = -0.5  # the default bar: threshold less this many standard errors of the estimate (here: plus half of one)
EXACT_PREFILTER_ERRORS = 3.0  # exact mode: below the threshold by this many standard errors, a pair is no edge
SURE_ERRORS = 4.0  # exact mode: above the threshold by this many standard errors, a pair is an edge unchecked
RESOLVE_PAIRS = 1 << 20  # components with exact checks: deferred pairs that trigger a check before the last band
RECALL_WEIGHT = {"exact": 0.98, "estimate": 0.9, "off": 0.9}  # false-negative weight of the banding per mode


def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.1,
                  false_negative_weight: float = 0.9) -> tuple[int, int]:
    """datasketch's optimal (bands, rows) for the threshold; weighted to favour recall by default.

    Candidates are verified afterwards, so a false positive costs a comparison while a false
    negative loses a duplicate for good. `bands_for` weights by verification mode.
    """
    from datasketch.lsh import _optimal_param

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold {threshold} must be between 0 and 1 (a Jaccard similarity)")
    return _optimal_param(threshold, num_perm, false_positive_weight, false_negative_weight)


def bands_for(mode: str, threshold: float, num_perm: int) -> tuple[int, int]:
    """The default (bands, rows) of a verification mode. Exact verification removes every false
    candidate, so its banding favours recall more: at 0.8 and 128 permutations 17 bands of 7 rows
    make a pair at J = 0.8 a candidate with probability 0.98 (14 x 9, the estimate's banding: 0.87)."""
    weight = RECALL_WEIGHT[verify_mode(mode)]
    return optimal_bands(threshold, num_perm, 1.0 - weight, weight)


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
    sure: with `exact`, pairs whose estimate is at least this are edges without computing their
        true Jaccard (four standard errors above the threshold: a pair below it gets there with
        probability about 3e-5).
    """

    estimate: float | None
    large: float
    exact: Callable[[np.ndarray], np.ndarray] | None = None
    threshold: float = 0.0
    sure: float = 2.0

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
            sure = verification_threshold(threshold, num_perm, -SURE_ERRORS)
            return cls(estimate=loose, large=loose, exact=exact, threshold=threshold, sure=sure)
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
            verification: Verification, max_bucket: int = 256, window: int = WINDOW, method: str = "components",
            memory_limit: str | None = None, chain: int = CHAIN) -> dict:
    """Create temp table `clusters(doc_id, cluster_id, cluster_size)` from the relation `signatures`.

    Args:
        signatures: a table or view name with columns doc_id BIGINT, signature UINTEGER[].
        bands, rows: LSH banding; bands * rows <= num_perm.
        verification: which candidate pairs become edges.
        max_bucket: buckets larger than this pair each member with its `window` neighbours in
            signature order instead of with all members.
        method: "components" or "star" (see the module's docstring).
        memory_limit: DuckDB's memory limit while clustering ("4GB"); what does not fit spills to
            the connection's temp_directory. None: the connection's own limit.
        chain: components mode compares each member of a bucket with its next `chain` members in
            signature order first, and the rest of a small bucket's pairs only between members
            still in different clusters.

    Returns:
        counts: pairs compared (of which from large buckets), pairs checked exactly, edges found,
        propagation iterations, documents in clusters. Components mode never compares two
        documents already in one cluster, so these count the work done, not every pair of a bucket.
    """
    if bands < 1 or rows < 1 or bands * rows > num_perm:
        raise ValueError(f"bands {bands} x rows {rows} must be at least 1 x 1 and use at most num_perm = {num_perm} values")
    if method not in CLUSTER_METHODS:
        raise ValueError(f"cluster method {method!r} is not one of {', '.join(CLUSTER_METHODS)}")
    if max_bucket < 2 or window < 1 or chain < 1:
        raise ValueError(f"max_bucket ({max_bucket}) must be at least 2, window ({window}) and chain ({chain}) at least 1")
    with memory_limited(con, memory_limit):
        work = _Clustering(con, signatures, rows=rows, num_perm=num_perm, verification=verification,
                           max_bucket=max_bucket, window=window, chain=chain, components=method == "components")
        try:
            for band in range(bands):
                work.band(band)
            if method == "components" and work.n_deferred:
                work.resolve()
            if method == "star":
                work.star()
            con.execute(f"""
                create or replace temp table clusters as
                with labelled as (
                    select s.doc_id, coalesce(l.label, s.doc_id) as cluster_id
                    from {signatures} s left join _labels l on l.node = s.doc_id
                )
                select doc_id, cluster_id, count(*) over (partition by cluster_id) as cluster_size from labelled
            """)
        finally:
            work.drop()
        work.counts["n_documents_in_clusters"] = con.execute("select count(*) from clusters where cluster_size > 1").fetchall()[0][0]
    return work.counts


@contextmanager
def memory_limited(con: duckdb.DuckDBPyConnection, limit: str | None):
    """DuckDB's memory_limit set to `limit` inside the block (None: unchanged), then restored."""
    if limit is None:
        yield
        return
    before = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
    set_memory_limit(con, limit)
    try:
        yield
    finally:
        # DuckDB shows a limit rounded ("18.8 GiB"): the default comes back exactly by a reset,
        # another one as shown
        con.execute("reset memory_limit")
        if con.execute("select current_setting('memory_limit')").fetchall()[0][0] != before:
            con.execute("set memory_limit = ?", [before.replace(" ", "")])


class _Clustering:
    """One clustering's working tables, a band at a time, so that the working set is one band's
    buckets and the pairs compared in it:

    - `_signatures`: the non-empty signatures, read once;
    - `_labels(node, label)`: the clusters so far (components) or their centers (star), members
      only: a document in none is its own;
    - `_found(a, b, large)`: every candidate pair (star: verified once, after every band; components
      verifies and merges them a band at a time).

    Components mode skips a bucket whose members are already one cluster and never compares two
    documents of one cluster: an edge inside a cluster changes nothing. So a group of k copies
    costs about k * chain comparisons in the first band it shares and none after, not k^2 per band.
    """

    TABLES = ("_signatures", "_band", "_members", "_pairs", "_kept", "_unsure", "_deferred", "_found", "_labels", "_edges", "_directed",
              "_component", "_next")

    def __init__(self, con: duckdb.DuckDBPyConnection, signatures: str, *, rows: int, num_perm: int, verification: Verification,
                 max_bucket: int, window: int, chain: int, components: bool):
        self.con, self.rows, self.num_perm, self.verification = con, rows, num_perm, verification
        self.max_bucket, self.window, self.chain, self.components = max_bucket, window, chain, components
        self.counts = {"n_candidate_pairs": 0, "n_large_bucket_pairs": 0, "n_exact_checks": 0, "n_edges": 0, "n_iterations": 0}
        run = con.execute
        run(f"create or replace temp table _signatures as select doc_id, signature from {signatures} where list_min(signature) < {EMPTY}")
        run("create or replace temp table _labels (node bigint, label bigint)")
        run("create or replace temp table _found (a bigint, b bigint, large boolean)")
        run("create or replace temp table _deferred (a bigint, b bigint)")  # components: pairs for the exact check
        self.n_deferred = 0

    def band(self, band: int) -> None:
        """Compare the pairs of band `band`'s buckets and record what they join."""
        large = self.max_bucket
        if not self.members(band):
            return
        # each member and its next neighbours in signature order: `window` of them in a large
        # bucket; in a small one (components) `chain` of them, to join most of a group cheaply
        chain = self.chain if self.components else 0
        near = "_members" if chain else f"(select * from _members where n > {large})"
        merged = self.compare(f"""
            from {near} x cross join range(1, {max(self.window, chain) + 1}) o(k)
            join _members y on y.bucket = x.bucket and y.position = x.position + o.k
            where o.k <= (case when x.n > {large} then {self.window} else {chain} end) and y.label <> x.label
        """)
        # the rest of a small bucket's pairs (components: between members still in different clusters,
        # so the members are read again when the first pairs merged some)
        if merged and not self.members(band, small_only=True):
            return
        self.compare(f"""
            from (select * from _members where n <= {large}) x join (select * from _members where n <= {large}) y
              on y.bucket = x.bucket and y.position > x.position + {chain} and y.label <> x.label
        """)

    def members(self, band: int, small_only: bool = False) -> int:
        """`_members`: the documents of band `band`'s buckets that hold more than one cluster, with
        their cluster, their bucket's size and their position in it in the order of the signature
        values after the band (rotated), ties by doc_id. Returns their number."""
        rows, run = self.rows, self.con.execute
        run(f"""
            create or replace temp table _band as
            select s.doc_id, hash(list_slice(s.signature, {band * rows + 1}, {(band + 1) * rows})) as bucket,
                   coalesce(l.label, s.doc_id) as label
            from _signatures s left join _labels l on l.node = s.doc_id
        """)
        size = f"and count(*) <= {self.max_bucket}" if small_only else ""
        run(f"""
            create or replace temp table _members as
            with k as (select bucket, count(*) as n from _band group by bucket having min(label) < max(label) {size})
            select b.doc_id, b.bucket, b.label, k.n,
                   row_number() over (
                       partition by b.bucket
                       order by list_concat(list_slice(s.signature, {(band + 1) * rows + 1}, {self.num_perm}),
                                            list_slice(s.signature, 1, {(band + 1) * rows})), b.doc_id
                   ) as position
            from _band b join k using (bucket) join _signatures s on s.doc_id = b.doc_id
        """)
        run("drop table _band")
        return run("select count(*) from _members").fetchall()[0][0]

    def compare(self, pairs_sql: str) -> bool:
        """Verify the pairs `pairs_sql` selects (x, y: members of one bucket) and record the edges.
        Returns whether clusters merged (components)."""
        run = self.con.execute
        run(f"""
            create or replace temp table _pairs as
            select least(x.doc_id, y.doc_id) as a, greatest(x.doc_id, y.doc_id) as b,
                   x.label as la, y.label as lb, x.n > {self.max_bucket} as large
            {pairs_sql}
        """)
        if not self.components:  # star: every band's candidates first, each pair verified once
            run("insert into _found select a, b, large from _pairs")
            return False
        return self.verify()

    def verify(self) -> bool:
        """`_kept`: the `_pairs` that are edges, counted; components merges the clusters they link.
        Returns whether any did."""
        run = self.con.execute
        n, n_large = run("select count(*), count(*) filter (where large) from _pairs").fetchall()[0]
        self.counts["n_candidate_pairs"] += n
        self.counts["n_large_bucket_pairs"] += n_large
        if not n:
            return False
        estimate = -1.0 if self.verification.estimate is None else self.verification.estimate
        run(f"""
            create or replace temp table _kept as
            with estimated as (
                select p.a, p.b, p.la, p.lb, p.large,
                       list_count(list_filter(list_zip(sa.signature, sb.signature), lambda v: v[1] = v[2])) as equal
                from _pairs p
                join _signatures sa on sa.doc_id = p.a
                join _signatures sb on sb.doc_id = p.b
            )
            select a, b, la, lb, equal >= {float(self.verification.sure)!r}::double * {self.num_perm} as sure from estimated
            where equal >= (case when large then {float(self.verification.large)!r}::double else {float(estimate)!r}::double end) * {self.num_perm}
        """)
        run("drop table _pairs")
        if self.verification.exact is not None and self.components:
            # the pairs the estimate cannot decide wait for an exact check (`resolve`) after the last band,
            # or once RESOLVE_PAIRS of them wait: the texts are read once or a few times, not once per
            # band. The clusters are the same: a pair compared meanwhile that an earlier check would
            # have let skip joins documents that end up in one cluster anyway
            self.n_deferred += run("insert into _deferred select a, b from _kept where not sure").fetchall()[0][0]
            run("create or replace temp table _kept as select a, b, la, lb from _kept where sure")
        elif self.verification.exact is not None:
            self.check_exactly()
        found = self.take_edges()
        resolved = self.n_deferred >= RESOLVE_PAIRS and self.resolve()
        return self.components and (found or resolved)

    def take_edges(self) -> bool:
        """Count the `_kept` pairs as edges; components merges the clusters they link. Returns whether any."""
        found = self.con.execute("select count(*) from _kept").fetchall()[0][0]
        self.counts["n_edges"] += found
        if self.components and found:
            self.merge()
        return found > 0

    def check_exactly(self) -> None:
        """Keep the `_kept` pairs that are sure on their estimate or whose true Jaccard reaches the
        threshold (computed EXACT_BATCH pairs at a time; the callable bounds its own memory)."""
        run, verification = self.con.execute, self.verification
        run("create or replace temp table _unsure as select row_number() over (order by a, b) as i, a, b, la, lb from _kept where not sure")
        run("create or replace temp table _kept as select a, b, la, lb from _kept where sure")
        total = run("select count(*) from _unsure").fetchall()[0][0]
        for low in range(0, total, EXACT_BATCH):
            batch = run(f"select a, b, la, lb from _unsure where i > {low} and i <= {low + EXACT_BATCH} order by i").fetchnumpy()
            pairs = np.stack([batch["a"], batch["b"]], axis=1).astype(np.int64)
            self.counts["n_exact_checks"] += len(pairs)
            similar = verification.exact(pairs) >= verification.threshold
            self.con.register("_checked", pa.table({
                **{c: pa.array(np.asarray(batch[c]), pa.int64()) for c in ("a", "b", "la", "lb")}, "close": pa.array(similar)}))
            run("insert into _kept select a, b, la, lb from _checked where close")
            self.con.unregister("_checked")
        run("drop table _unsure")

    def resolve(self) -> bool:
        """Components with exact verification: check the deferred pairs whose documents are still in
        different clusters, each once, and join the clusters of those at or above the threshold.
        Returns whether any did."""
        run = self.con.execute
        run("""
            create or replace temp table _kept as
            select a, b, la, lb, false as sure from (
                select distinct d.a, d.b, coalesce(x.label, d.a) as la, coalesce(y.label, d.b) as lb
                from _deferred d left join _labels x on x.node = d.a left join _labels y on y.node = d.b
            ) where la <> lb
        """)
        run("create or replace temp table _deferred (a bigint, b bigint)")
        self.n_deferred = 0
        self.check_exactly()
        return self.take_edges()

    def merge(self) -> None:
        """Join the clusters the `_kept` pairs link: components of the graph of their labels, then
        every member of a merged cluster relabelled with the smallest label (= smallest doc_id)."""
        run = self.con.execute
        run("create or replace temp table _edges as select distinct least(la, lb) as a, greatest(la, lb) as b from _kept where la <> lb")
        self.counts["n_iterations"] += _components(self.con)
        run("""
            create or replace temp table _labels as
            with nodes as (
                select node, label from _labels
                union all
                select n, n from (select a as n from _kept union select b from _kept) anti join _labels l on l.node = n
            )
            select nodes.node, coalesce(c.label, nodes.label) as label from nodes left join _component c on c.node = nodes.label
        """)

    def star(self) -> None:
        """`_labels` from every verified candidate pair: greedy centers (`star_centers`). A pair
        met in a small bucket in any band is verified as from a small one."""
        run = self.con.execute
        run("create or replace temp table _pairs as select a, b, a as la, b as lb, bool_and(large) as large from _found group by a, b")
        run("drop table _found")
        self.verify()
        kept = run("select a, b from _kept").fetchnumpy() if self.counts["n_candidate_pairs"] else {"a": []}
        pairs = np.stack([kept["a"], kept["b"]], axis=1).astype(np.int64) if len(kept["a"]) else np.empty((0, 2), np.int64)
        del kept
        nodes, centers = star_centers(pairs)
        del pairs
        self.con.register("_centers", pa.table({"node": pa.array(nodes, pa.int64()), "label": pa.array(centers, pa.int64())}))
        self.con.execute("create or replace temp table _labels as select * from _centers")
        self.con.unregister("_centers")

    def drop(self) -> None:
        for table in self.TABLES:
            self.con.execute(f"drop table if exists {table}")


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


def _components(con: duckdb.DuckDBPyConnection) -> int:
    """Connected components of the `_edges(a, b)` graph into `_component(node, label)` (label: the
    component's smallest node), by min-label propagation with pointer jumping. Returns the iterations."""
    run = con.execute
    run("create or replace temp table _directed as select a, b from _edges union all select b, a from _edges")
    run("create or replace temp table _component as select a as node, least(a, min(b)) as label from _directed group by a")
    iterations = 0
    while True:
        iterations += 1
        run("""
            create or replace temp table _next as
            with neighbour as (
                select e.a as node, min(l.label) as label from _directed e join _component l on l.node = e.b group by e.a
            ),
            spread as (
                select l.node, least(l.label, n.label) as label from _component l join neighbour n using (node)
            )
            select s.node, least(s.label, j.label) as label from spread s join spread j on j.node = s.label
        """)
        changed = run("select count(*) from _next join _component using (node) where _next.label <> _component.label").fetchall()[0][0]
        run("create or replace temp table _component as select * from _next")
        if not changed:
            run("drop table _directed")
            return iterations
