-- purpose: one representative per near-duplicate cluster: the document whose doc_id is the cluster_id (the smallest)
-- depends:
-- params: none as a view (`dedup`, over documents); as a macro, docs := 'documents' (`dedup(docs := 'instances')`: the instances of representative documents)
-- Exact duplicates were merged at ingest (one row per doc_id); run `corpusdb minhash` first for
-- near-duplicates, or this view is every document. Rows without a minhash row are kept.
create or replace view dedup as
with final as (
    select d.*
    from documents as d
    left join minhash as m on d.doc_id = m.doc_id
    where m.doc_id is null or m.doc_id = m.cluster_id
)

select * from final;

create or replace macro dedup(docs := 'documents') as table
with final as (
    select d.*
    from query_table(docs) as d
    left join minhash as m on d.doc_id = m.doc_id
    where m.doc_id is null or m.doc_id = m.cluster_id
)

select * from final;
