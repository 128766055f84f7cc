-- purpose: documents cut into instances of at most N tokens (`corpusdb instances`): one row per span, with its text and its document's columns
-- depends:
-- params: none (a view over instance_spans and documents; empty until `corpusdb instances` has run)
-- An instance is the bytes [byte_start, byte_end) of its document's text: consecutive spans of
-- n_tokens tokens of the instances' tokenizer (`settings` in `corpusdb stats`) that end on token
-- boundaries, so a document's instances, in position order, concatenate to its text exactly.
-- instance_id hashes (doc_id, byte_start, byte_end), or is the doc_id of a document that is one
-- instance. Policies take `docs := 'instances'`.
create or replace view instances as
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
        i.n_bytes
    from instance_spans as i
    inner join documents as d on i.doc_id = d.doc_id
)

select * from final;
