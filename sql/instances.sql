-- purpose: documents cut into instances of at most N tokens (`corpusdb instances`): one row per span, with its text and its document's columns
-- depends: instances_of
-- params: none (a view over instance_spans and documents; empty until `corpusdb instances` has run)
-- An instance is the bytes [byte_start, byte_end) of its document's text: consecutive spans of
-- n_tokens tokens of the instances' tokenizer (`settings` in `corpusdb stats`) that end on token
-- boundaries, so a document's instances, in position order, concatenate to its text exactly.
-- instance_id hashes (doc_id, byte_start, byte_end), or is the doc_id of a document that is one
-- instance. Policies take `docs := 'instances'`.
create or replace view instances as
with final as (
    select * from instances_of('instance_spans')
)

select * from final;
