-- purpose: the unit a row of documents or instances stands for: its instance_id where the relation has one, else its doc_id
-- depends:
-- params: keys (the row's key columns as a struct: unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))))
-- Policies key scores and ties on this unit_id, so the same policy selects documents from
-- documents (scored with `corpusdb score`) and instances from instances (`corpusdb score --unit
-- instances`, whose scores' doc_id column holds instance ids). The key columns travel as a struct,
-- cast by name to one with both fields (the one a relation lacks is NULL), so that a relation
-- without instance_id binds too and no row pays for more than a cast. The JSON form of earlier
-- releases (`unit_key(to_json(struct_pack(...)))`) still works, slower; keys with neither field are
-- an error naming the struct form. (A scalar macro: DuckDB refuses a table macro nested in itself, which a shared
-- table macro would be as soon as two policies compose.)
create or replace macro unit_key(keys) as (
    coalesce(
        try_cast(keys as struct(instance_id bigint, doc_id bigint)).instance_id,
        try_cast(keys as struct(instance_id bigint, doc_id bigint)).doc_id,
        case when keys is not null then error(
            'unit_key: pass the key columns as a struct, unit_key(struct_pack(*columns(''^(instance_id|doc_id)$''))), '
            || 'not ' || keys::varchar
        ) end
    )
);
