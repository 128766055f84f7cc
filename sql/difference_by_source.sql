-- purpose: difference sampling with a keep fraction per source (top alpha of each source by the difference score)
-- depends: difference_keys, require, unit_key
-- params: teacher, reference; alphas := map {'source': alpha, ...}; alpha := 0.5 (sources not in alphas); per; docs
-- Each source is ranked on keys alone (`difference_keys`); the text is joined back for the kept
-- rows, which come by source, then rank (difference_rank).
create or replace macro difference_by_source(
    teacher, reference, alphas := map {}, alpha := 0.5, per := 'byte', docs := 'documents'
) as table
with checks as (
    select
        require(
            alpha > 0 and alpha <= 1, 'difference_by_source: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
        )
        and require(
            coalesce(list_bool_and(list_transform(map_values(alphas), lambda a: a > 0 and a <= 1)), true),
            'difference_by_source: every value of alphas must be in (0, 1], not ' || alphas::varchar
        ) as ok
),

ranked as (
    select
        *,
        coalesce(alphas[source], alpha) as source_alpha,
        row_number() over (partition by source order by score desc, unit_id asc) as difference_rank,
        count(*) over (partition by source) as n_scored
    from difference_keys(teacher, reference, per := per, docs := docs)
),

kept as (
    -- one row per unit, where docs repeats rows (each of its rows then joins back once)
    select distinct on (unit_id, n_bytes) unit_id, n_bytes, teacher_logprob, reference_logprob, score, difference_rank
    from ranked
    where (select ok from checks) and difference_rank <= ceil(source_alpha * n_scored)
    order by unit_id, n_bytes, difference_rank
),

final as (
    select d.* exclude (unit_id), kept.teacher_logprob, kept.reference_logprob, kept.score, kept.difference_rank
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d
    inner join kept on d.unit_id = kept.unit_id and d.n_bytes = kept.n_bytes
    order by d.source, kept.difference_rank, d.unit_id
)

select * from final;
