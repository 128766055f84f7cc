-- purpose: documents of the named sources
-- depends: require
-- params: sources (a list, e.g. ['bible', 'shakespeare']); docs := 'documents'
create or replace macro filter_source(sources, docs := 'documents') as table
with present as (
    select list(distinct source order by source) as names from query_table(docs)
),

checks as (
    select require(
        len(sources) > 0 and list_bool_and(list_transform(sources, lambda s: list_contains(present.names, s))),
        'filter_source: no documents of source(s) '
        || list_filter(sources, lambda s: not list_contains(present.names, s))::varchar
        || '; sources: ' || present.names::varchar
    ) as ok
    from present
),

final as (
    select * from query_table(docs) where (select ok from checks) and list_contains(sources, source)
)

select * from final;
