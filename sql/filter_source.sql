-- purpose: documents of the named sources
-- depends: filter_source_checks
-- params: sources (a list, e.g. ['bible', 'shakespeare']); docs := 'documents'
create or replace macro filter_source(sources, docs := 'documents') as table
with present as (
    select list(distinct source order by source) as names from query_table(docs)
),

checks as (
    select filter_source_checks(sources, present.names) as ok
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
