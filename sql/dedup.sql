-- purpose: one representative per near-duplicate cluster: the document whose doc_id is the cluster_id (the smallest)
-- depends: dedup_checks
-- params: none as a view (`dedup`, over documents); as a macro, docs := 'documents' (`dedup(docs := 'instances')`: the instances of representative documents) and missing := 'error' | 'keep' | 'exclude'
-- Exact duplicates were merged at ingest (one row per doc_id); `corpusdb minhash` gives every
-- document a minhash row (its cluster). A row of docs without one (a document ingested after
-- minhash ran, never compared with anything; or no minhash run at all) is an error naming how
-- many and the fix (run `corpusdb minhash` again: it signs only the new documents, then
-- re-clusters), unless missing := 'keep' (kept as if unique) or 'exclude' (dropped). The
-- coverage count is an anti-join on doc_id.
create or replace macro dedup(docs := 'documents', missing := 'error') as table
with unjudged as (
    -- keys alone: how many rows of docs have no minhash row
    select count(*) filter (where m.doc_id is null) as n_missing, count(*) as n_units
    from (select doc_id from query_table(docs)) as d
    left join (select doc_id from minhash) as m on d.doc_id = m.doc_id
),

checks as (
    select dedup_checks(missing, unjudged.n_missing, unjudged.n_units, docs) as ok
    from unjudged
),

final as (
    -- the second branch never has a row, but keeps the checks where DuckDB proves the join empty
    select d.*
    from query_table(docs) as d
    left join minhash as m on d.doc_id = m.doc_id, checks
    where checks.ok and (m.doc_id = m.cluster_id or (m.doc_id is null and missing = 'keep'))
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;

create or replace view dedup as
select * from dedup();
