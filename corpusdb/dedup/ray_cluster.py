"""Near-duplicate clustering as Ray tasks: the same band join, verification and clusters as the DuckDB path.

    corpusdb minhash s3://bkt/db --executor ray --address auto

1. bands (one task per signature part): each document's band buckets (xxh3 of the band's values),
   hash-partitioned by bucket into `partitions` outputs that carry the signature along;
2. candidate edges (one task per partition): documents sharing a (band, bucket); buckets of up to
   `max_bucket` give all pairs, larger ones each member's `window` neighbours in signature
   order, verified on their estimated Jaccard like the SQL path (an exact check runs on the
   driver);
3. components (one task per edge partition and round): min-label propagation with pointer
   jumping, labels broadcast through the object store, until no label changes; star clusters
   are chosen on the driver (a sequential greedy pass over the edges).

Every decision is the one `corpusdb.dedup.cluster` makes in SQL, so the table is identical (a
test compares them); only where the work runs differs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

EMPTY = np.uint32(0xFFFFFFFF)


def _band_rows(url: str, storage_options: dict, part: str, bands: int, rows: int, partitions: int) -> list:
    from corpusdb.storage import Location

    location = Location(url, storage_options)
    location.invalidate()  # this worker's filesystem may hold a listing from before other tasks wrote
    table = pq.read_table(part, filesystem=location.fs)
    ids = table.column("doc_id").to_numpy()
    flat = table.column("signature").combine_chunks().flatten().to_numpy()
    num_perm = len(flat) // max(len(ids), 1)
    signatures = flat.reshape(len(ids), num_perm) if len(ids) else np.empty((0, num_perm), dtype=np.uint32)
    keep = signatures.min(axis=1) < EMPTY if len(ids) else np.zeros(0, dtype=bool)
    ids, signatures = ids[keep], signatures[keep]
    out = [[] for _ in range(partitions)]
    for band in range(bands):
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        buckets = np.array([xxhash.xxh3_64_intdigest(row.tobytes(), seed=band) for row in block], dtype=np.uint64)
        target = buckets % np.uint64(partitions)
        for p in range(partitions):
            mask = target == p
            if mask.any():
                out[p].append((np.full(mask.sum(), band, dtype=np.int32), buckets[mask], ids[mask], signatures[mask]))
    return [_stack(chunks, num_perm) for chunks in out]


def _stack(chunks: list, num_perm: int) -> dict:
    if not chunks:
        return {"band": np.empty(0, np.int32), "bucket": np.empty(0, np.uint64), "doc_id": np.empty(0, np.int64),
                "signature": np.empty((0, num_perm), np.uint32)}
    return {key: np.concatenate([c[i] for c in chunks]) for i, key in enumerate(("band", "bucket", "doc_id", "signature"))}


def _edges(num_perm: int, rows: int, estimate: float | None, large: float, max_bucket: int, window: int,
           *pieces: dict) -> np.ndarray:
    """(a, b, equal signature values) of the pairs, a < b, of one bucket partition that pass the
    estimate, as in SQL."""
    band = np.concatenate([p["band"] for p in pieces])
    bucket = np.concatenate([p["bucket"] for p in pieces])
    doc = np.concatenate([p["doc_id"] for p in pieces])
    signature = np.concatenate([p["signature"] for p in pieces]) if pieces else np.empty((0, num_perm), np.uint32)
    order = np.lexsort((doc, bucket, band))
    band, bucket, doc, signature = band[order], bucket[order], doc[order], signature[order]
    starts = np.flatnonzero(np.r_[True, (band[1:] != band[:-1]) | (bucket[1:] != bucket[:-1])])
    ends = np.r_[starts[1:], len(doc)]
    small, big = [], []
    for start, end in zip(starts, ends):
        n = end - start
        if n < 2:
            continue
        if n <= max_bucket:
            i, j = np.triu_indices(n, k=1)
            small.append(np.stack([doc[start + i], doc[start + j], (signature[start + i] == signature[start + j]).sum(axis=1)], axis=1))
            continue
        # a large bucket: each member and its next `window` members in the order of the signature
        # values after the band (rotated), ties by doc_id, as the SQL path orders them
        members = signature[start:end]
        cut = (int(band[start]) + 1) * rows
        rotated = np.concatenate([members[:, cut:], members[:, :cut]], axis=1)
        ranked = np.lexsort((doc[start:end], *rotated.T[::-1]))
        ids, values = doc[start:end][ranked], members[ranked]
        for k in range(1, min(window, n - 1) + 1):
            equal = (values[:-k] == values[k:]).sum(axis=1)
            big.append(np.stack([np.minimum(ids[:-k], ids[k:]), np.maximum(ids[:-k], ids[k:]), equal], axis=1))
    small_pairs = np.concatenate(small) if small else np.empty((0, 3), np.int64)
    big_pairs = np.concatenate(big) if big else np.empty((0, 3), np.int64)
    # a pair met in both kinds of bucket is kept if either keeps it: the SQL path's rule, since the
    # estimate bar is never above the large-bucket bar
    keep_small = small_pairs if estimate is None else small_pairs[small_pairs[:, 2] >= estimate * num_perm]
    keep_big = big_pairs[big_pairs[:, 2] >= large * num_perm]
    pairs = np.concatenate([keep_small, keep_big])  # a pair's equal values are the same in every band
    return np.unique(pairs, axis=0) if len(pairs) else np.empty((0, 3), dtype=np.int64)


def _propagate(edges: np.ndarray, nodes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the sources in `edges` (src, dst): min of own and neighbours' labels."""
    src, dst = edges[:, 0], edges[:, 1]
    neighbour = labels[np.searchsorted(nodes, dst)]
    order = np.argsort(src, kind="stable")
    src, neighbour = src[order], neighbour[order]
    heads = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
    best = np.minimum.reduceat(neighbour, heads) if len(src) else neighbour
    own = labels[np.searchsorted(nodes, src[heads])]
    return src[heads], np.minimum(own, best)


def cluster_with_ray(db, *, bands: int, rows: int, num_perm: int, verification, max_bucket: int = 256,
                     window: int | None = None, method: str = "components", partitions: int = 8) -> pa.Table:
    """The minhash table (doc_id, cluster_id, cluster_size) of `db`'s signatures, computed by Ray tasks.

    `verification` is a `corpusdb.dedup.cluster.Verification`; an exact check runs on the driver
    over the pairs the tasks kept whose estimate is not sure, as in SQL.
    """
    import ray

    from corpusdb.dedup.cluster import WINDOW, star_centers

    window = WINDOW if window is None else window

    location = db.location
    parts = db.parts("signatures")
    band_task = ray.remote(num_returns=partitions)(_band_rows) if partitions > 1 else ray.remote(_band_rows)
    outputs = [band_task.remote(location.url, location.storage_options, part, bands, rows, partitions) for part in parts]
    if partitions == 1:
        outputs = [[o] for o in outputs]
    edge_task = ray.remote(_edges)
    edge_refs = [edge_task.remote(num_perm, rows, verification.estimate, verification.large, max_bucket, window,
                                  *[out[p] for out in outputs]) for p in range(partitions)]
    pairs = np.concatenate(ray.get(edge_refs)) if edge_refs else np.empty((0, 3), np.int64)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs
    if verification.exact is not None and len(pairs):
        unsure = np.flatnonzero(pairs[:, 2] < verification.sure * num_perm)
        keep = np.ones(len(pairs), dtype=bool)
        keep[unsure] = verification.exact(pairs[unsure, :2]) >= verification.threshold
        pairs = pairs[keep]
    pairs = np.ascontiguousarray(pairs[:, :2])

    ids = db.sql("select doc_id from signatures").to_arrow_table().column("doc_id").to_numpy()
    if len(pairs) and method == "star":  # greedy centers: sequential, on the driver, as in the SQL path
        nodes, labels = star_centers(pairs)
        cluster = ids.copy()
        inside = np.isin(ids, nodes)
        cluster[inside] = labels[np.searchsorted(nodes, ids[inside])]
    elif len(pairs):
        directed = np.concatenate([pairs, pairs[:, ::-1]])
        nodes = np.unique(directed[:, 0])
        labels = nodes.copy()
        pieces = [ray.put(directed[directed[:, 0] % partitions == p]) for p in range(partitions)]
        step = ray.remote(_propagate)
        while True:
            labels_ref, nodes_ref = ray.put(labels), ray.put(nodes)
            updated = labels.copy()
            for src, new in ray.get([step.remote(piece, nodes_ref, labels_ref) for piece in pieces]):
                updated[np.searchsorted(nodes, src)] = new
            updated = np.minimum(updated, updated[np.searchsorted(nodes, updated)])  # pointer jumping
            if np.array_equal(updated, labels):
                break
            labels = updated
        cluster = ids.copy()
        inside = np.isin(ids, nodes)
        cluster[inside] = labels[np.searchsorted(nodes, ids[inside])]
    else:
        cluster = ids.copy()
    _, inverse, counts = np.unique(cluster, return_inverse=True, return_counts=True)
    return pa.table({"doc_id": pa.array(ids, pa.int64()), "cluster_id": pa.array(cluster, pa.int64()),
                     "cluster_size": pa.array(counts[inverse], pa.int64())})
