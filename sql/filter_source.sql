-- purpose: documents of the named sources
-- depends:
-- params: sources (a list, e.g. ['bible', 'shakespeare']); docs := 'documents'
create or replace macro filter_source(sources, docs := 'documents') as table
with final as (
    select * from query_table(docs) where list_contains(sources, source)
)

select * from final;
