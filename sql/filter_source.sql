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
    -- the second branch never has a row but keeps the checks where the first could be skipped (an empty list of
    -- sources, or one no row group's statistics admit, lets the optimizer drop the scan, and the check with it)
    select d.* from query_table(docs) as d, checks where checks.ok and list_contains(sources, d.source)
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
