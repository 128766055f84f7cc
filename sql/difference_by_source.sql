-- purpose: difference sampling with a keep fraction per source (top alpha of each source by the difference score)
-- depends: difference_scores, require
-- params: teacher, reference; alphas := map {'source': alpha, ...}; alpha := 0.5 (sources not in alphas); per; docs
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

scored as (
    select * from difference_scores(teacher, reference, per := per, docs := docs)
),

ranked as (
    select
        *,
        coalesce(alphas[source], alpha) as source_alpha,
        row_number() over (partition by source order by score desc, unit_id asc) as difference_rank,
        count(*) over (partition by source) as n_scored
    from scored
),

final as (
    select * exclude (n_scored, source_alpha, unit_id)
    from ranked
    where (select ok from checks) and difference_rank <= ceil(source_alpha * n_scored)
    order by source, difference_rank
)

select * from final;
