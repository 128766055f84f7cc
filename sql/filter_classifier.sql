-- purpose: units whose classifier score (an annotation's column) lies in [min_score, max_score], or the top alpha of them (DCLM's top 10%)
-- depends: filter_classifier_checks, unit_key
-- params: name (the annotation, e.g. 'edu'); min_score := null; max_score := null; alpha := null (keep the top ceil(alpha * N) by key); key := 'score' (the annotation's column to judge by: 'int_score', or any numeric column); docs := 'documents'; missing := 'error' | 'exclude' | 'keep'
-- For `corpusdb annotate DB NAME --annotator classifier --model M` (FineWeb-Edu: regression head,
-- `filter_classifier('edu', min_score := 3, key := 'int_score')`), an annotation imported with
-- --from, or any annotation with a numeric column. min_score and max_score bound the column `key`
-- (NULL: no bound); alpha keeps the ceil(alpha * N) units of docs with the highest values, ties by
-- unit id, where N counts the units judged with a value (DCLM keeps the top 10% of its pool by
-- fastText score: alpha := 0.1). Both together keep the units within the bounds that are also
-- in the top alpha.
-- A unit without a value (an empty document) is never kept, except with missing := 'keep' for
-- units that have no annotation row at all. Every row of docs needs a row of the annotation:
-- documents ingested after the annotator ran are an error naming the fix, unless missing :=
-- 'exclude' (dropped) or 'keep' (kept unjudged). Over instances each instance is judged by its
-- document's row. The result has the columns of docs.
create or replace macro filter_classifier(
    name, min_score := null, max_score := null, alpha := null, key := 'score', docs := 'documents', missing := 'error'
) as table
with scored as (
    -- keys and the column's value alone
    select doc_id, columns('^' || key || '$')::double as value
    from query_table('annotations_' || name)
),

unjudged as (
    select count(*) filter (where a.doc_id is null) as n_missing, count(*) as n_units
    from (select doc_id from query_table(docs)) as d
    left join (select doc_id from scored) as a on d.doc_id = a.doc_id
),

checks as (
    select
        filter_classifier_checks(
            name, alpha, min_score, max_score, missing, unjudged.n_missing, unjudged.n_units, docs
        ) as ok,
        coalesce(min_score, -1e308) as low,
        coalesce(max_score, 1e308) as high
    from unjudged
),

units as (
    -- one row per row of docs: its unit, its value (NULL: no value), whether it has a row at all
    select d.unit_id, a.value, a.doc_id is not null as judged
    from (
        select unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id, doc_id from query_table(docs)
    ) as d
    left join scored as a on d.doc_id = a.doc_id
),

ranked as (
    -- every unit with a value, by rank (alpha's top is of all of them, whatever the bounds)
    select unit_id, value, row_number() over (order by value desc, unit_id asc) as position
    from (select distinct unit_id, value from units where value is not null)
),

kept as (
    select r.unit_id
    from ranked as r, checks
    where
        r.value >= checks.low and r.value <= checks.high
        and (alpha is null or r.position <= ceil(alpha * (select count(*) from ranked)))
    union all
    select unit_id from units where not judged and missing = 'keep'
),

final as (
    select d.* exclude (unit_id)
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d, checks
    where checks.ok and d.unit_id in (select unit_id from kept)
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
