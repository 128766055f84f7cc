-- purpose: the unit a row of documents or instances stands for: its instance_id where the relation has one, else its doc_id
-- depends:
-- params: keys (the row's key columns as JSON: unit_key(to_json(struct_pack(*columns('^(instance_id|doc_id)$')))))
-- Policies key scores and ties on this unit_id, so the same policy selects documents from
-- documents (scored with `corpusdb score`) and instances from instances (`corpusdb score --unit
-- instances`, whose scores' doc_id column holds instance ids). The key columns travel as JSON so
-- that a relation without instance_id binds too. (A scalar macro: DuckDB refuses a table macro
-- nested in itself, which a shared table macro would be as soon as two policies compose.)
create or replace macro unit_key(keys) as (
    coalesce((keys ->> 'instance_id')::bigint, (keys ->> 'doc_id')::bigint)
);
