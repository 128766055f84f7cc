"""The experiment's three disjoint sets of text: the scored pool, the reference's training set and the held-out set.

One seeded order of near-duplicate clusters (`corpusdb minhash`) hands out whole clusters: the pool
first (up to `pool_mb`), then the reference set (up to `reference_mb`), then the held-out set from
the clusters after both. A near-copy of a pool or reference document is in its cluster, so it is
never held out. MinHash misses looser copies (Jaccard 0.57-0.77 pairs were left as singletons in
the demo corpus), so every held-out candidate is also checked against the pool and the reference
set by word 13-grams (the decontamination index of `corpusdb decontaminate`) and dropped when more
than `heldout_max_overlap` of its 13-grams occur there.

The held-out set is drawn per source, by bytes: half of `heldout_mb` split equally among the
pool's sources and half by their share of the pool, so every source trained on is evaluated; no
held-out document is larger than `heldout_max_doc` of the set. Nothing held out needs a score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

NGRAM = 13


@dataclass
class HeldOut:
    """What the held-out draw took and why it passed others over."""

    doc_ids: list[int] = field(default_factory=list)
    targets: dict[str, int] = field(default_factory=dict)  # bytes aimed at per source
    documents: dict[str, int] = field(default_factory=dict)  # documents taken per source
    bytes: dict[str, int] = field(default_factory=dict)  # bytes taken per source
    dropped_overlap: int = 0  # candidates dropped: too many 13-grams shared with the pool or the reference set
    dropped_large: int = 0  # candidates larger than heldout_max_doc of the set
    max_overlap: float = 0.0  # the largest share of 13-grams a kept document shares with them

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "doc_ids"}


def make_splits(db, config, prefix: str) -> HeldOut:
    """Create the views {prefix}_docs, _pool, _train (the pool: every pool document is a training document),
    _reference_slice and _heldout; returns the held-out draw."""
    p = prefix
    if config.pool_mb <= 0:
        raise ValueError("pool_mb must be positive: the reference and held-out sets are drawn from the text outside the pool")
    db.create_view(f"{p}_docs", "select d.*, coalesce(m.cluster_id, d.doc_id) as cluster "
                                "from documents d left join minhash m using (doc_id)", replace=True)
    # every cluster, with the bytes of the clusters before it in the seeded order
    db.create_view(f"{p}_clusters", f"select cluster, sum(n_bytes) as n_bytes, coalesce(sum(sum(n_bytes)) over (order by "
                                    f"uniform(cluster, 3), cluster rows between unbounded preceding and 1 preceding), 0) "
                                    f"as bytes_before from {p}_docs group by cluster", replace=True)
    pool_end = _end(db, p, 0, config.pool_mb)
    reference_end = _end(db, p, pool_end, config.reference_mb)
    total = db.sql(f"select sum(n_bytes) from {p}_clusters").fetchall()[0][0]
    if reference_end - pool_end < config.reference_mb * 1e6 or total - reference_end < 2 * config.heldout_mb * 1e6:
        raise ValueError(f"the database holds {total / 1e6:.1f} MB of text: not enough for a {config.pool_mb} MB pool, a "
                         f"{config.reference_mb} MB reference set and a {config.heldout_mb} MB held-out set (with room "
                         "to pass over overlapping documents); lower pool_mb")
    for name, low, high in (("pool", 0, pool_end), ("reference_slice", pool_end, reference_end)):
        db.create_view(f"{p}_{name}", f"select d.* from {p}_docs d semi join (select cluster from {p}_clusters "
                                      f"where bytes_before >= {low} and bytes_before < {high}) c using (cluster)", replace=True)
    db.create_view(f"{p}_train", f"select * from {p}_pool", replace=True)
    heldout = _draw_heldout(db, config, p, reference_end)
    ids = ", ".join(str(i) for i in sorted(heldout.doc_ids))
    db.create_view(f"{p}_heldout", f"select * from {p}_docs where doc_id in ({ids})", replace=True)
    return heldout


def _end(db, p: str, start: int, mb: float) -> int:
    """Where the clusters from `start` (a bytes_before) up to `mb` MB end: the next cluster's bytes_before."""
    (end,) = db.sql(f"select coalesce(min(bytes_before), (select sum(n_bytes) from {p}_clusters)) from {p}_clusters "
                    f"where bytes_before >= {start} + {int(mb * 1e6)}").fetchall()[0]
    return int(end)


def _targets(db, p: str, heldout_bytes: int) -> dict[str, int]:
    shares = dict(db.sql(f"select source, sum(n_bytes) / (select sum(n_bytes) from {p}_pool) from {p}_pool "
                         f"group by source order by source").fetchall())
    return {s: int(heldout_bytes * (0.5 / len(shares) + 0.5 * share)) for s, share in shares.items()}


def _texts(db, p: str, doc_ids: list[int], batch: int = 256):
    """The texts of `doc_ids` in that order, read a batch at a time as the caller asks for them."""
    for start in range(0, len(doc_ids), batch):
        ids = doc_ids[start : start + batch]
        found = dict(db.sql(f"select doc_id, text from {p}_docs where doc_id in ({', '.join(map(str, ids))})").fetchall())
        yield from (found[i] for i in ids)


def _draw_heldout(db, config, p: str, start: int) -> HeldOut:
    from corpusdb.annotations.decontamination import NgramIndex, WordHasher, ngram_keys

    heldout_bytes = int(config.heldout_mb * 1e6)
    largest = int(config.heldout_max_doc * heldout_bytes)
    draw = HeldOut(targets=_targets(db, p, heldout_bytes))
    seen = db.sql(f"select text from {p}_pool union all select text from {p}_reference_slice").fetchall()
    index = NgramIndex.build((t for (t,) in seen), NGRAM)
    hasher = WordHasher()
    for source, target in draw.targets.items():
        taken = 0
        # this source's documents after the reference set, in the clusters' order; texts read only as needed
        rows = db.sql(
            f"select d.doc_id, d.n_bytes from {p}_docs d join {p}_clusters c using (cluster) "
            f"where c.bytes_before >= {start} and d.source = ? and d.n_bytes > 0 "
            f"order by uniform(c.cluster, 3), c.cluster, d.doc_id", params=[source]).fetchall()
        texts = _texts(db, p, [doc_id for doc_id, n_bytes in rows if n_bytes <= largest])
        for doc_id, n_bytes in rows:
            if taken >= target:
                break
            if n_bytes > largest:
                draw.dropped_large += 1
                continue
            h1, h2, _, _ = ngram_keys([next(texts)], NGRAM, hasher)
            overlap = float(np.mean(index.contains(h1, h2))) if len(h1) else 0.0
            if overlap > config.heldout_max_overlap:
                draw.dropped_overlap += 1
                continue
            draw.max_overlap = max(draw.max_overlap, overlap)
            draw.doc_ids.append(int(doc_id))
            draw.documents[source] = draw.documents.get(source, 0) + 1
            draw.bytes[source] = draw.bytes.get(source, 0) + int(n_bytes)
            taken += n_bytes
    missing = sorted(set(draw.targets) - set(draw.documents))
    if missing:
        raise ValueError(f"no held-out document of {', '.join(missing)}: outside the pool and the reference set every one "
                         "is larger than heldout_max_doc of the held-out set or shares a word 13-gram with them; lower "
                         "pool_mb or reference_mb, or raise heldout_max_doc or heldout_max_overlap")
    return draw
