-- purpose: what a relation's rows are: 'instances' where it has an instance_id column, 'documents' otherwise (NULL when empty)
-- depends:
-- params: docs (a table or view name)
create or replace macro unit_of(docs) as (
    select case when keys ->> 'instance_id' is null then 'documents' else 'instances' end
    from (select to_json(struct_pack(*columns('^(instance_id|doc_id)$'))) as keys from query_table(docs) limit 1)
);
