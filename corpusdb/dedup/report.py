"""Near-duplicate statistics: per source, how many documents sit in clusters of which size; per
cluster size, how similar the members are to the document `dedup` keeps, and how many clusters
are chains (members whose true Jaccard is below the threshold, on a sample of clusters).

    corpusdb dedup-report demo/db
    corpusdb dedup-report demo/db --by size
"""

from __future__ import annotations

from corpusdb.db import Database
from corpusdb.errors import CorpusDBError

REPORT_SQL = """
with joined as (
    select d.source, d.n_bytes, m.doc_id, m.cluster_id, m.cluster_size
    from documents d join minhash m using (doc_id)
),
per_source as (
    select
        source,
        count(*) as n_documents,
        count(distinct cluster_id) filter (where cluster_size > 1) as n_clusters,
        count(*) filter (where doc_id <> cluster_id) as n_duplicates,
        coalesce(sum(n_bytes) filter (where doc_id <> cluster_id), 0) as duplicate_bytes,
        count(*) filter (where cluster_size = 1) as size_1,
        count(*) filter (where cluster_size = 2) as size_2,
        count(*) filter (where cluster_size between 3 and 5) as size_3_5,
        count(*) filter (where cluster_size >= 6) as size_6_plus,
        max(cluster_size) as max_cluster_size
    from joined group by source
),
total as (
    select
        '(all)' as source, count(*), count(distinct cluster_id) filter (where cluster_size > 1),
        count(*) filter (where doc_id <> cluster_id), coalesce(sum(n_bytes) filter (where doc_id <> cluster_id), 0),
        count(*) filter (where cluster_size = 1), count(*) filter (where cluster_size = 2),
        count(*) filter (where cluster_size between 3 and 5), count(*) filter (where cluster_size >= 6),
        max(cluster_size)
    from joined
),
final as (
    select * from (select * from per_source order by source) union all select * from total
)
select * from final
"""


SIZE_RANGES = """case when cluster_size = 2 then '2' when cluster_size <= 5 then '3-5' when cluster_size <= 20 then '6-20'
                   when cluster_size <= 100 then '21-100' else '101+' end"""
SAMPLE_CLUSTERS = 50  # clusters per size range whose members' true Jaccard is computed
SAMPLE_MEMBERS = 12  # members per sampled cluster (the smallest doc_ids, the kept one first)

SIZE_SQL = f"""
with members as (
    select m.doc_id, m.cluster_id, m.cluster_size,
           list_count(list_filter(list_zip(s.signature, r.signature), lambda v: v[1] = v[2])) / len(s.signature)
               as similarity
    from minhash m
    join signatures s on s.doc_id = m.doc_id
    join signatures r on r.doc_id = m.cluster_id
    where m.cluster_size > 1 and m.doc_id <> m.cluster_id
),
sized as (
    select *, {SIZE_RANGES} as sizes
    from members
)
select sizes as cluster_size, count(distinct cluster_id) as n_clusters, count(*) as n_duplicates,
       round(avg(similarity), 3) as mean_similarity, round(min(similarity), 3) as min_similarity,
       max(cluster_size) as largest
from sized group by sizes order by min(cluster_size)
"""

SAMPLE_SQL = f"""
with sized as (
    select doc_id, cluster_id, {SIZE_RANGES} as sizes from minhash where cluster_size > 1
),
ranked as (
    select *, dense_rank() over (partition by sizes order by hash(cluster_id), cluster_id) as k,
           row_number() over (partition by cluster_id order by doc_id) as m
    from sized
)
select sizes, cluster_id, list(doc_id order by doc_id) as members from ranked
where k <= {SAMPLE_CLUSTERS} and m <= {SAMPLE_MEMBERS} group by all
"""


def dedup_report(db: Database, by: str = "source") -> tuple[list[str], list[tuple]]:
    """(columns, rows): per source and in all, documents by the size of their near-duplicate cluster.

    `n_duplicates` counts documents that are not their cluster's representative (the smallest
    doc_id), i.e. what `dedup` removes; `size_K` columns count documents in clusters of that size.

    With `by="size"`: per range of cluster sizes, the clusters, their duplicates and the estimated
    Jaccard (equal signature values) of each duplicate with its representative, mean and minimum;
    then, on up to 50 clusters of the range (their 12 smallest members), `n_chained`: how many hold
    two members whose true shingle Jaccard is below the clustering's threshold, and the smallest
    such Jaccard. Chained clusters are near-duplicates of near-duplicates: `dedup` removes members
    that are not near-duplicates of what it keeps (`corpusdb minhash --cluster star` makes none).

    Raises:
        CorpusDBError: the database has no clusters yet.
    """
    if by not in ("source", "size"):
        raise CorpusDBError(f"--by {by!r} is not one of source, size")
    if not db.parts("minhash"):
        raise CorpusDBError(f"{db.url} has no near-duplicate clusters yet; run `corpusdb minhash {db.url}` first")
    relation = db.sql(REPORT_SQL if by == "source" else SIZE_SQL)
    columns, rows = relation.columns, relation.fetchall()
    if by == "size":
        chains = _chains(db)
        columns += ["n_sampled", "n_chained", "min_true_jaccard"]
        rows = [(*row, *chains.get(row[0], (0, 0, None))) for row in rows]
    return columns, rows


def _chains(db: Database) -> dict[str, tuple[int, int, float | None]]:
    """{size range: (clusters sampled, clusters with a pair below the threshold, smallest true Jaccard)}."""
    import numpy as np

    from corpusdb.dedup.exact import ExactJaccard
    from corpusdb.dedup.job import hasher_of

    settings = db.snapshot.settings.get("minhash")
    if not settings:
        return {}
    sampled = db.sql(SAMPLE_SQL).fetchall()
    pairs = [(sizes, cluster, a, b) for sizes, cluster, members in sampled
             for i, a in enumerate(members) for b in members[i + 1:]]
    if not pairs:
        return {}
    similarity = ExactJaccard(db.con, hasher_of(settings))(np.array([(a, b) for *_, a, b in pairs], dtype=np.int64))
    lowest: dict[tuple[str, int], float] = {}
    for (sizes, cluster, _, _), value in zip(pairs, similarity.tolist()):
        lowest[(sizes, cluster)] = min(lowest.get((sizes, cluster), 1.0), value)
    out: dict[str, tuple[int, int, float | None]] = {}
    for (sizes, _), value in lowest.items():
        n, chained, smallest = out.get(sizes, (0, 0, None))
        out[sizes] = (n + 1, chained + (value < settings["threshold"]), round(value if smallest is None else min(smallest, value), 3))
    return out
