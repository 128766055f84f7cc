"""Near-duplicate clustering in DuckDB: the clusters of every verified pair sharing a bucket, found
with work that follows the documents (not the squares of their duplicate groups), under a memory limit."""

from __future__ import annotations

from collections import defaultdict

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from corpusdb.dedup.cluster import Verification, cluster

NUM_PERM, BANDS, ROWS = 128, 14, 9


def _signatures(con: duckdb.DuckDBPyConnection, signatures: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ids = rng.permutation(np.arange(len(signatures), dtype=np.int64) * 2654435761 - 2**62)
    offsets = pa.array(np.arange(0, (len(signatures) + 1) * NUM_PERM, NUM_PERM, dtype=np.int32))
    table = pa.table({"doc_id": ids, "signature": pa.ListArray.from_arrays(offsets, pa.array(signatures.ravel()))})
    con.register("signatures", table)
    return ids


def _copies(rng: np.random.Generator, groups: int, copies: int, singles: int, max_changed: int = 7) -> np.ndarray:
    """`groups` groups of `copies` signatures, each its group's base with up to `max_changed` values redrawn, then `singles`."""
    base = np.repeat(rng.integers(0, 2**32 - 1, (groups, NUM_PERM), dtype=np.uint32), copies, axis=0)
    changed = rng.random(base.shape) < rng.integers(0, max_changed + 1, (len(base), 1)) / NUM_PERM
    base[changed] = rng.integers(0, 2**32 - 1, int(changed.sum()), dtype=np.uint32)
    return np.concatenate([base, rng.integers(0, 2**32 - 1, (singles, NUM_PERM), dtype=np.uint32)])


def _reference(ids: np.ndarray, signatures: np.ndarray, bar: float) -> dict[int, int]:
    """doc_id -> smallest doc_id of its component, by union-find over every pair sharing a band's
    values whose estimated Jaccard reaches `bar` (every bucket compared in full)."""
    parent = list(range(len(ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for band in range(BANDS):
        buckets = defaultdict(list)
        for i, row in enumerate(signatures[:, band * ROWS:(band + 1) * ROWS]):
            buckets[row.tobytes()].append(i)
        for members in buckets.values():
            for x, i in enumerate(members):
                for j in members[x + 1:]:
                    if (signatures[i] == signatures[j]).sum() >= bar * NUM_PERM:
                        ri, rj = find(i), find(j)
                        parent[max(ri, rj)] = min(ri, rj)
    smallest: dict[int, int] = {}
    for i in range(len(ids)):
        root = find(i)
        smallest[root] = min(smallest.get(root, ids[i]), ids[i])
    return {int(ids[i]): int(smallest[find(i)]) for i in range(len(ids))}


def test_components_are_those_of_every_verified_pair_of_a_bucket():
    rng = np.random.default_rng(3)
    signatures = _copies(rng, groups=60, copies=12, singles=1500, max_changed=40)  # some copies fall apart
    signatures[:150, :ROWS] = 7  # a template: one bucket of 150 in band 0, mostly dissimilar
    con = duckdb.connect()
    ids = _signatures(con, signatures, rng)
    verification = Verification.of("estimate", 0.8, NUM_PERM)
    counts = cluster(con, "signatures", bands=BANDS, rows=ROWS, num_perm=NUM_PERM, verification=verification,
                     max_bucket=256)
    got = dict(con.execute("select doc_id, cluster_id from clusters").fetchall())
    assert got == _reference(ids, signatures, verification.estimate)
    assert counts["n_documents_in_clusters"] > 300  # not only singles


def test_heavy_duplication_compares_each_copy_a_few_times_under_a_memory_limit():
    rng = np.random.default_rng(5)
    groups, copies, singles = 40, 100, 2000
    signatures = _copies(rng, groups, copies, singles)
    con = duckdb.connect()
    ids = _signatures(con, signatures, rng)
    limit_before = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
    counts = cluster(con, "signatures", bands=BANDS, rows=ROWS, num_perm=NUM_PERM,
                     verification=Verification.of("estimate", 0.8, NUM_PERM), memory_limit="256MB")
    sizes = con.execute("select cluster_id, count(*) from clusters group by 1 having count(*) > 1").fetchall()
    assert sorted(n for _, n in sizes) == [copies] * groups
    group_of = dict(con.execute("select doc_id, cluster_id from clusters").fetchall())
    for g in range(groups):  # each group is one cluster, named by its smallest doc_id
        members = ids[g * copies:(g + 1) * copies]
        assert {group_of[int(i)] for i in members} == {int(members.min())}
    # all pairs of a bucket would be groups * copies * (copies - 1) / 2 = 198,000 comparisons
    assert counts["n_candidate_pairs"] <= 3 * len(signatures)
    assert con.execute("select current_setting('memory_limit')").fetchall()[0][0] == limit_before


def test_a_memory_limit_duckdb_cannot_read_is_one_line_naming_the_form():
    con = duckdb.connect()
    _signatures(con, np.zeros((2, NUM_PERM), dtype=np.uint32), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"memory limit 'lots' .* e\.g\. 4GB"):
        cluster(con, "signatures", bands=BANDS, rows=ROWS, num_perm=NUM_PERM,
                verification=Verification.of("estimate", 0.8, NUM_PERM), memory_limit="lots")
