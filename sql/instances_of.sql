-- purpose: the instances of some spans (a table or view with instance_spans' columns): each span joined to its document, its text cut; what the `instances` view and the policies' join back over instances read
-- depends:
-- params: spans (the name of a table, view or CTE with instance_spans' columns, and any more: they follow n_bytes); docs := 'documents' (the documents they cut, e.g. with a column more)
-- `instances` is instances_of('instance_spans'). The policies that cut over instances pass the
-- kept spans alone, so that only the kept instances' documents are joined and cut, instead of
-- joining the `instances` view (every span, every document's text) to the kept keys; each kept
-- span carries its kept row's columns through (`instances_of_kept`).
create or replace macro instances_of(spans, docs := 'documents') as table
with final as (
    select
        i.instance_id,
        i.doc_id,
        i.position,
        i.byte_start,
        i.byte_end,
        i.n_tokens,
        d.* exclude (doc_id, text, n_bytes),
        decode(encode(d.text)[i.byte_start + 1:i.byte_end]) as text,
        i.n_bytes,
        i.* exclude (instance_id, doc_id, position, byte_start, byte_end, n_tokens, n_bytes)
    -- the spans on the right: where a query is planned as written (the scoring job's, which disables DuckDB's join
    -- order optimizers), the right side is hashed, and the documents' text streams past the spans
    from query_table(docs) as d
    inner join query_table(spans) as i on i.doc_id = d.doc_id
)

select * from final;
