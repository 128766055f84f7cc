-- purpose: one representative per near-duplicate cluster: the document whose doc_id is the cluster_id (the smallest)
-- depends:
-- params: none (a view over documents and minhash; documents without a minhash row are kept)
-- Exact duplicates were merged at ingest (one row per doc_id); run `corpusdb minhash` first for
-- near-duplicates, or this view is every document.
create or replace view dedup as
with final as (
    select d.*
    from documents as d
    left join minhash as m on d.doc_id = m.doc_id
    where m.doc_id is null or m.doc_id = m.cluster_id
)

select * from final;
