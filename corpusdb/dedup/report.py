"""Near-duplicate statistics per source: how many documents sit in clusters of which size.

    corpusdb dedup-report demo/db
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


def dedup_report(db: Database) -> tuple[list[str], list[tuple]]:
    """(columns, rows): per source and in all, documents by the size of their near-duplicate cluster.

    `n_duplicates` counts documents that are not their cluster's representative (the smallest
    doc_id), i.e. what `dedup` removes; `size_K` columns count documents in clusters of that size.

    Raises:
        CorpusDBError: the database has no clusters yet.
    """
    if not db.parts("minhash"):
        raise CorpusDBError(f"{db.url} has no near-duplicate clusters yet; run `corpusdb minhash {db.url}` first")
    relation = db.sql(REPORT_SQL)
    return relation.columns, relation.fetchall()
