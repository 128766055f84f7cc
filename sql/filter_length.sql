-- purpose: documents whose UTF-8 size lies in [min_bytes, max_bytes]
-- depends:
-- params: min_bytes := 0; max_bytes := null (no upper bound); docs := 'documents'
create or replace macro filter_length(min_bytes := 0, max_bytes := null, docs := 'documents') as table
with final as (
    select *
    from query_table(docs)
    where n_bytes >= min_bytes and (max_bytes is null or n_bytes <= max_bytes)
)

select * from final;
